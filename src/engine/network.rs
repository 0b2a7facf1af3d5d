//! A sequential network built from a [`ModelSpec`]: the architecture as data, stored in every
//! model file, so any file loads without knowing which preset made it.

use ndarray::{Array2, Axis, Ix2, IxDyn};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::int8::Epilogue;
use super::layers::{build_layer, checked_size, Layer, LayerSpec, Mode, Param, Shape};
use super::loss::softmax_at_temperature;
use super::personal::{personal_faces, Personal};
use super::tensor::{standard, Rng, Tensor};
use crate::{FerError, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Preset name, or a user's name for a custom architecture.
    pub name: String,
    /// Per-sample input shape `[channels, height, width]`.
    pub input: [usize; 3],
    pub layers: Vec<LayerSpec>,
    /// Number of outputs (logits) of the last layer.
    pub classes: usize,
}

/// The most layers a model may have (the deepest preset has 31).
pub const MAX_LAYERS: usize = 1000;

pub struct Network {
    spec: ModelSpec,
    layers: Vec<Box<dyn Layer>>,
    /// What [`Network::predict`] divides the logits by before the softmax (1 unless a model
    /// file's metadata gives one).
    temperature: f32,
    /// Weights calibrated to one person, used for the faces that look like that person's
    /// captures ([`super::personal`]); only [`Network::predict`] reads them.
    personal: Option<Box<Personal>>,
}

impl Network {
    /// Builds the layers, drawing initial weights from `seed`. Fails when a layer does not fit
    /// its input or the output is not `[classes]`.
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Network> {
        if spec.layers.len() > MAX_LAYERS {
            return Err(FerError::Model(format!("the model has {} layers; at most {MAX_LAYERS} are supported", spec.layers.len())));
        }
        let mut rng = Rng::seed_from_u64(seed);
        let mut shape: Shape = spec.input.to_vec();
        checked_size(&shape)?;
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (i, layer_spec) in spec.layers.iter().enumerate() {
            let at_layer = |e| match e {
                FerError::Model(message) => FerError::Model(format!("layer {i}: {message}")),
                other => other,
            };
            let (layer, out) = build_layer(layer_spec, &shape, &mut rng).map_err(at_layer)?;
            checked_size(&out).map_err(at_layer)?;
            layers.push(layer);
            shape = out;
        }
        if shape != [spec.classes] {
            return Err(FerError::Model(format!(
                "the last layer outputs {shape:?}, but the model needs [{}] (one logit per class)",
                spec.classes
            )));
        }
        Ok(Network { spec, layers, temperature: 1.0, personal: None })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Logits `[n, classes]` for a batch `[n, c, h, w]`.
    pub fn forward(&mut self, input: Tensor, mode: &mut Mode) -> Array2<f32> {
        let mut activation = standard(input);
        let fuse = matches!(mode, Mode::Eval);
        let mut next = 0;
        while next < self.layers.len() {
            if fuse {
                if let Some((output, layers_used)) = self.forward_fused(next, &activation) {
                    activation = standard(output);
                    next += layers_used;
                    continue;
                }
            }
            activation = standard(self.layers[next].forward(activation, mode));
            next += 1;
        }
        activation.into_dimensionality::<Ix2>().expect("the network was built to output [n, classes]")
    }

    /// The output of the first `count` layers for a batch, in evaluation mode (f32): the
    /// features that the layers after them see (calibration fits a classifier on them).
    pub fn forward_prefix(&mut self, input: Tensor, count: usize) -> Tensor {
        let mut activation = standard(input);
        let count = count.min(self.layers.len());
        for layer in &mut self.layers[..count] {
            activation = standard(layer.forward(activation, &mut Mode::Eval));
        }
        activation
    }

    /// Layer `first` with the batch-norm and ReLU right after it folded into its output pass,
    /// where it can (a convolution): the output and how many layers it stood for.
    fn forward_fused(&mut self, first: usize, input: &Tensor) -> Option<(Tensor, usize)> {
        let (layer, after) = self.layers[first..].split_first_mut()?;
        let affine = after.first().and_then(|l| l.channel_affine());
        let folded_affine = usize::from(affine.is_some());
        let relu = after.get(folded_affine).is_some_and(|l| l.is_relu());
        let output = layer.forward_fused(input, &Epilogue { affine, relu })?;
        Some((output, 1 + folded_affine + usize::from(relu)))
    }

    /// Evaluation passes (predict, evaluate, the camera) in integer arithmetic: 8-bit weights
    /// times 16-bit activations in the convolutions (`engine::int8`); the rest stays f32, and
    /// training and batch-norm recalibration are unaffected. Exact for int8 model files' weights.
    pub fn set_int8_inference(&mut self, on: bool) {
        self.layers.iter_mut().for_each(|layer| layer.set_int8_inference(on));
        if let Some(personal) = &mut self.personal {
            personal.network.set_int8_inference(on);
        }
    }

    /// The personal branch, when the model was calibrated to someone.
    pub fn personal(&self) -> Option<&Personal> {
        self.personal.as_deref()
    }

    /// Sets or removes the personal branch (a branch of the branch is dropped).
    pub fn set_personal(&mut self, personal: Option<Personal>) {
        self.personal = personal.map(|mut p| {
            p.network.personal = None;
            Box::new(p)
        });
    }

    /// A copy of the model's own layers, tensors and temperature, without a personal branch.
    pub fn copy_without_personal(&self) -> Network {
        let mut copy = Network::new(self.spec.clone(), 0).expect("the same spec builds again");
        for ((_, target), (_, source)) in copy.named_tensors_mut().into_iter().zip(self.named_tensors()) {
            target.clone_from(source);
        }
        copy.temperature = self.temperature;
        copy
    }

    pub fn has_batch_norm(&self) -> bool {
        self.spec.layers.contains(&LayerSpec::BatchNorm)
    }

    /// Makes every batch-norm layer's running statistics the mean of its batch statistics over
    /// `batches` (forward passes normalising with batch statistics, as in training). Does
    /// nothing, without running the batches, when the network has no batch-norm layer; else
    /// the temperature goes back to 1 (it was fitted to the old statistics).
    pub fn recalibrate_batch_norm(&mut self, batches: impl IntoIterator<Item = Tensor>) {
        if !self.has_batch_norm() {
            return;
        }
        self.temperature = 1.0;
        for (batch, input) in batches.into_iter().enumerate() {
            self.forward(input, &mut Mode::Recalibrate { batch });
        }
    }

    /// Back-propagates d loss / d logits through every layer, adding to each parameter's gradient.
    pub fn backward(&mut self, grad_logits: Array2<f32>) {
        let mut grad = grad_logits.into_dyn();
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            match layer.backward(grad, i > 0) {
                Some(next) => grad = standard(next),
                None => break,
            }
        }
    }

    /// Every layer's output in evaluation mode, first layer first (for looking inside a model).
    pub fn layer_outputs(&mut self, input: Tensor) -> Vec<Tensor> {
        let mut outputs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut activation = standard(input);
        for layer in &mut self.layers {
            activation = standard(layer.forward(activation, &mut Mode::Eval));
            outputs.push(activation.clone());
        }
        outputs
    }

    /// The saved tensor called `name` (see [`Network::named_tensors`]).
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.named_tensors().into_iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Logits `[n, classes]` in evaluation mode, before the temperature (the model's own
    /// weights: a personal branch is not read).
    pub fn logits(&mut self, input: Tensor) -> Array2<f32> {
        self.forward(input, &mut Mode::Eval)
    }

    /// Class probabilities `[n, classes]` in evaluation mode: softmax(logits / temperature).
    /// Every probability the library gives out of a network comes through here. With a
    /// personal branch, each face goes through the weights its gate chooses.
    pub fn predict(&mut self, input: Tensor) -> Array2<f32> {
        let Some(personal) = self.personal.as_mut() else {
            return softmax_at_temperature(self.logits(input).view(), self.temperature);
        };
        let routes = personal_faces(&personal.gate, &input.view());
        let (mine, own): (Vec<usize>, Vec<usize>) = (0..routes.len()).partition(|&i| routes[i]);
        if own.is_empty() {
            return personal.network.predict(input);
        }
        if mine.is_empty() {
            return softmax_at_temperature(self.logits(input).view(), self.temperature);
        }
        let personal_probs = personal.network.predict(input.select(Axis(0), &mine));
        let own_probs = softmax_at_temperature(self.logits(input.select(Axis(0), &own)).view(), self.temperature);
        let mut probs = Array2::zeros((routes.len(), self.spec.classes));
        for (rows, values) in [(&mine, personal_probs), (&own, own_probs)] {
            for (&row, p) in rows.iter().zip(values.axis_iter(Axis(0))) {
                probs.row_mut(row).assign(&p);
            }
        }
        probs
    }

    /// See [`Network::set_temperature`].
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Makes [`Network::predict`] divide the logits by `temperature` (temperature scaling,
    /// fitted by `confidence::fit_temperature` so that the probabilities match how often the
    /// model is right); 1 leaves them as they are. The class each face gets is unchanged. A
    /// temperature holds for the weights it was fitted to: training or re-measuring the
    /// batch-norm statistics sets it back to 1.
    pub fn set_temperature(&mut self, temperature: f32) -> Result<()> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(FerError::Model(format!("a temperature must be a positive number, not {temperature}")));
        }
        self.temperature = temperature;
        Ok(())
    }

    pub fn params(&self) -> Vec<&Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers.iter_mut().flat_map(|l| l.params_mut()).collect()
    }

    pub fn zero_grad(&mut self) {
        for param in self.params_mut() {
            param.grad.fill(0.0);
        }
    }

    pub fn parameter_count(&self) -> usize {
        self.params().iter().map(|p| p.value.len()).sum()
    }

    /// Multiply-adds for one sample's forward pass (convolutions and dense layers).
    pub fn macs(&self) -> usize {
        self.layers.iter().map(|l| l.macs()).sum()
    }

    /// Every saved tensor (parameters and buffers) as `layers.{i}.{name}`, in layer order.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut named = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            named.extend(layer.saved_tensors().into_iter().map(|(name, t)| (format!("layers.{i}.{name}"), t)));
        }
        named
    }

    /// The saved tensors of layer `index` by name (`weight`, `running_mean`, ...).
    pub fn layer_tensors(&self, index: usize) -> Vec<(&'static str, &Tensor)> {
        self.layers[index].saved_tensors()
    }

    pub fn layer_tensors_mut(&mut self, index: usize) -> Vec<(&'static str, &mut Tensor)> {
        self.layers[index].saved_tensors_mut()
    }

    /// Mutable access to the tensors of [`Network::named_tensors`], for loading.
    pub fn named_tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut named = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            named.extend(layer.saved_tensors_mut().into_iter().map(|(name, t)| (format!("layers.{i}.{name}"), t)));
        }
        named
    }
}

/// A batch tensor `[n, c, h, w]` from `n` samples laid end to end.
pub fn batch_tensor(input: [usize; 3], values: Vec<f32>) -> Result<Tensor> {
    let per_sample: usize = input.iter().product();
    if per_sample == 0 || !values.len().is_multiple_of(per_sample) {
        return Err(FerError::Data(format!("{} values do not make whole samples of shape {input:?}", values.len())));
    }
    let n = values.len() / per_sample;
    Tensor::from_shape_vec(IxDyn(&[n, input[0], input[1], input[2]]), values).map_err(|e| FerError::Data(e.to_string()))
}

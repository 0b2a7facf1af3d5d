//! Layers: each has a forward pass that caches what its backward pass needs (in training
//! mode only), and a backward pass that accumulates parameter gradients and returns the
//! gradient with respect to its input.

mod activation;
mod batchnorm;
mod conv;
mod dense;
mod pool;

pub use activation::{Dropout, Flatten, Relu};
pub use batchnorm::{BatchNorm, EPSILON as BATCH_NORM_EPSILON};
pub use conv::Conv2d;
pub use dense::Dense;
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};

use serde::{Deserialize, Serialize};

use super::int8::Epilogue;
use super::tensor::{Rng, Tensor};
use crate::{FerError, Result};

/// A conv or dense layer's initial weights or biases: uniform in ±1/√fan_in (variance
/// 1/(3·fan_in)), PyTorch's default for both (`kaiming_uniform_` with a = √5). He's normal
/// initialisation (variance 2/fan_in, six times this) made the paper's `seed` start with logits
/// of spread 1–3 and a loss of 2–4 instead of ln 7 ≈ 1.95, and end about 2.5 points lower on
/// PublicTest (docs/reference.md); with batch-norm after a layer the scale matters less.
pub(crate) fn fan_in_uniform(shape: &[usize], fan_in: usize, rng: &mut Rng) -> Tensor {
    use rand::Rng as _;
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    Tensor::from_shape_simple_fn(ndarray::IxDyn(shape), || rng.random_range(-bound..bound))
}

/// A trainable tensor and its gradient (same shape), accumulated by `backward`.
#[derive(Clone, Debug)]
pub struct Param {
    pub value: Tensor,
    pub grad: Tensor,
    /// Whether weight decay applies: weights yes; biases and batch-norm scales no.
    pub decay: bool,
}

impl Param {
    pub fn new(value: Tensor, decay: bool) -> Param {
        let grad = Tensor::zeros(value.raw_dim());
        Param { value, grad, decay }
    }
}

/// Training mode draws dropout masks and uses batch statistics; evaluation is deterministic.
pub enum Mode<'a> {
    Train(&'a mut Rng),
    Eval,
    /// A forward pass that only re-measures batch-norm statistics: batch-norm layers normalise
    /// with the batch's statistics, as in training, and make their running statistics the mean
    /// over this pass's batches so far (`batch` counts them from 0); nothing is kept for a
    /// backward pass and dropout is off.
    Recalibrate {
        batch: usize,
    },
}

impl Mode<'_> {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

pub trait Layer: Send {
    /// `input` is `[n, ...]` in the shape this layer was built for.
    fn forward(&mut self, input: Tensor, mode: &mut Mode) -> Tensor;
    /// Gradient of the loss w.r.t. this layer's output → parameter gradients are added to, and
    /// the gradient w.r.t. the input is returned when `want_input_grad` (the first layer's is not
    /// needed). Only valid after a training-mode forward.
    fn backward(&mut self, grad_output: Tensor, want_input_grad: bool) -> Option<Tensor>;
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }
    /// Names of the parameters, in `params()` order (`weight`, `bias`, ...).
    fn param_names(&self) -> &'static [&'static str] {
        &[]
    }
    /// Everything saved with the model, by name: the parameters' values, plus non-trainable
    /// state such as batch-norm running statistics.
    fn saved_tensors(&self) -> Vec<(&'static str, &Tensor)> {
        self.param_names().iter().copied().zip(self.params().into_iter().map(|p| &p.value)).collect()
    }
    fn saved_tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        let names = self.param_names();
        names.iter().copied().zip(self.params_mut().into_iter().map(|p| &mut p.value)).collect()
    }
    /// Multiply-adds per sample in the forward pass.
    fn macs(&self) -> usize {
        0
    }
    /// Whether evaluation-mode forward passes use integer arithmetic where the layer has it
    /// (convolutions: see `engine::int8`).
    fn set_int8_inference(&mut self, _on: bool) {}
    /// An evaluation-mode forward pass that also applies `epilogue` (the batch-norm and ReLU
    /// layers that follow, folded in), where the layer can; `None` where it cannot.
    fn forward_fused(&mut self, _input: &Tensor, _epilogue: &Epilogue) -> Option<Tensor> {
        None
    }
    /// Evaluation's output as `x · scale + shift` per channel (batch-norm), for folding.
    fn channel_affine(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }
    fn is_relu(&self) -> bool {
        false
    }
}

/// How a convolution pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: the output shrinks by `kernel - 1` (at stride 1).
    Valid,
    /// Output size `ceil(input / stride)`, padding split as TensorFlow does (the extra
    /// row/column, for even kernels, goes at the bottom/right): the paper's model was built so.
    Same,
    /// The same number of zeros on every side.
    Explicit(usize),
}

/// One layer of a sequential network, as stored in a model file's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerSpec {
    Conv2d {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        /// Channel groups (1: every filter sees every channel); left out of files when 1.
        #[serde(default = "one_group", skip_serializing_if = "is_one_group")]
        groups: usize,
    },
    MaxPool {
        window: usize,
        stride: usize,
    },
    AvgPool {
        window: usize,
        stride: usize,
    },
    GlobalAvgPool,
    Dense {
        units: usize,
    },
    BatchNorm,
    Relu,
    Flatten,
    Dropout {
        rate: f32,
    },
}

fn one_group() -> usize {
    1
}

fn is_one_group(groups: &usize) -> bool {
    *groups == 1
}

/// A per-sample activation shape: `[c, h, w]` for images, `[features]` after flattening.
pub type Shape = Vec<usize>;

/// The most values one face's activation may hold in any layer (64 MB of f32); the largest
/// preset's is 0.15 M.
pub const MAX_ACTIVATION_VALUES: usize = 1 << 24;

/// The number of values in `shape`, refused past [`MAX_ACTIVATION_VALUES`].
pub fn checked_size(shape: &[usize]) -> Result<usize> {
    match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(size) if size <= MAX_ACTIVATION_VALUES => Ok(size),
        _ => Err(FerError::Model(format!("an activation of shape {shape:?} holds more than {MAX_ACTIVATION_VALUES} values per face"))),
    }
}

fn expect_image(spec: &LayerSpec, shape: &Shape) -> Result<[usize; 3]> {
    match shape.as_slice() {
        &[c, h, w] => Ok([c, h, w]),
        _ => Err(FerError::Model(format!("{spec:?} needs an image input [c, h, w], got {shape:?}"))),
    }
}

fn expect_flat(spec: &LayerSpec, shape: &Shape) -> Result<usize> {
    match shape.as_slice() {
        &[features] => Ok(features),
        _ => Err(FerError::Model(format!("{spec:?} needs a flat input [features], got {shape:?}: add a flatten or global_avg_pool first"))),
    }
}

fn positive(spec: &LayerSpec, what: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(FerError::Model(format!("{spec:?}: {what} must be at least 1")));
    }
    Ok(())
}

/// The most weights one layer may have: a model file is read from anywhere, and one that asks
/// for a billion filters must get a message before anything is allocated, not an out-of-memory
/// abort (a trap, in wasm). The largest preset layer has 0.6 M.
pub const MAX_LAYER_WEIGHTS: usize = 1 << 26;

/// `count` (None when it overflowed) within [`MAX_LAYER_WEIGHTS`].
fn weights_within_limit(spec: &LayerSpec, count: Option<usize>) -> Result<()> {
    match count {
        Some(count) if count <= MAX_LAYER_WEIGHTS => Ok(()),
        _ => Err(FerError::Model(format!(
            "{spec:?} would have {} weights; a layer may have at most {MAX_LAYER_WEIGHTS}",
            count.map_or_else(|| "more than can be counted".to_string(), |c| c.to_string())
        ))),
    }
}

/// Builds the layer `spec` for per-sample input `shape`, with weights drawn from `rng`;
/// returns it with its output shape. Errors name the layer and the shape that does not fit.
pub fn build_layer(spec: &LayerSpec, shape: &Shape, rng: &mut Rng) -> Result<(Box<dyn Layer>, Shape)> {
    Ok(match *spec {
        LayerSpec::Conv2d { filters, kernel, stride, padding, groups } => {
            positive(spec, "filters", filters)?;
            positive(spec, "kernel", kernel)?;
            positive(spec, "stride", stride)?;
            positive(spec, "groups", groups)?;
            let input = expect_image(spec, shape)?;
            let per_filter = (input[0] / groups).checked_mul(kernel).and_then(|n| n.checked_mul(kernel));
            weights_within_limit(spec, per_filter.and_then(|n| n.checked_mul(filters)))?;
            let layer = Conv2d::new(input, filters, kernel, stride, padding, groups, rng)
                .map_err(|e| FerError::Model(format!("{spec:?} on input {shape:?}: {e}")))?;
            let out = layer.output_shape();
            (Box::new(layer), out.to_vec())
        }
        LayerSpec::MaxPool { window, stride } | LayerSpec::AvgPool { window, stride } => {
            positive(spec, "window", window)?;
            positive(spec, "stride", stride)?;
            let input = expect_image(spec, shape)?;
            if input[1] < window || input[2] < window {
                return Err(FerError::Model(format!("{spec:?}: window larger than input {shape:?}")));
            }
            if matches!(spec, LayerSpec::MaxPool { .. }) {
                let layer = MaxPool2d::new(input, window, stride);
                let out = layer.output_shape();
                (Box::new(layer), out.to_vec())
            } else {
                let layer = AvgPool2d::new(input, window, stride);
                let out = layer.output_shape();
                (Box::new(layer), out.to_vec())
            }
        }
        LayerSpec::GlobalAvgPool => {
            let input = expect_image(spec, shape)?;
            (Box::new(GlobalAvgPool::new(input)), vec![input[0]])
        }
        LayerSpec::Dense { units } => {
            positive(spec, "units", units)?;
            let inputs = expect_flat(spec, shape)?;
            weights_within_limit(spec, inputs.checked_mul(units))?;
            (Box::new(Dense::new(inputs, units, rng)), vec![units])
        }
        LayerSpec::BatchNorm => {
            if shape.is_empty() || shape.len() == 2 {
                return Err(FerError::Model(format!("{spec:?} needs [c, h, w] or [features], got {shape:?}")));
            }
            (Box::new(BatchNorm::new(shape[0])), shape.clone())
        }
        LayerSpec::Relu => (Box::new(Relu::default()), shape.clone()),
        LayerSpec::Flatten => (Box::new(Flatten::new(shape.clone())), vec![checked_size(shape)?]),
        LayerSpec::Dropout { rate } => {
            if !(0.0..1.0).contains(&rate) {
                return Err(FerError::Model(format!("{spec:?}: rate must be in [0, 1)")));
            }
            (Box::new(Dropout::new(rate)), shape.clone())
        }
    })
}

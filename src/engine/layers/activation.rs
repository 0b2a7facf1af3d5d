//! Layers without parameters that act element-wise or only reshape: ReLU, flatten, dropout.

use ndarray::IxDyn;
use rand::Rng as _;

use super::{Layer, Mode};
use crate::engine::parallel::map_sample_chunks;
use crate::engine::tensor::{as_slice, as_slice_mut, larger, standard, Tensor};

#[derive(Default)]
pub struct Relu {
    /// The output (training mode): the gradient passes where it is positive.
    output: Option<Tensor>,
}

impl Layer for Relu {
    fn forward(&mut self, mut input: Tensor, mode: &mut Mode) -> Tensor {
        let per_sample = input.len() / input.shape()[0].max(1);
        map_sample_chunks(as_slice_mut(&mut input), per_sample, |_, values| {
            values.iter_mut().for_each(|v| *v = larger(*v, 0.0));
        });
        if mode.is_train() {
            self.output = Some(input.clone());
        }
        input
    }

    fn is_relu(&self) -> bool {
        true
    }

    fn backward(&mut self, mut grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let output = self.output.take().expect("Relu::backward needs a training-mode forward first");
        let output = as_slice(&output);
        let per_sample = output.len() / grad_output.shape()[0].max(1);
        map_sample_chunks(as_slice_mut(&mut grad_output), per_sample, |samples, grads| {
            let output = &output[samples.start * per_sample..];
            // A select, not a branch: half the outputs are zero, in no pattern a branch predictor
            // could learn, and the select vectorises.
            grads.iter_mut().zip(output).for_each(|(g, &y)| *g = if y <= 0.0 { 0.0 } else { *g });
        });
        Some(grad_output)
    }
}

/// `[n, c, h, w]` → `[n, c·h·w]`, in NCHW order.
pub struct Flatten {
    sample_shape: Vec<usize>,
}

impl Flatten {
    pub fn new(sample_shape: Vec<usize>) -> Flatten {
        Flatten { sample_shape }
    }
}

impl Layer for Flatten {
    fn forward(&mut self, input: Tensor, _mode: &mut Mode) -> Tensor {
        let n = input.shape()[0];
        let features = self.sample_shape.iter().product();
        standard(input).into_shape_with_order(IxDyn(&[n, features])).expect("flatten keeps the element count")
    }

    fn backward(&mut self, grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let n = grad_output.shape()[0];
        let shape: Vec<usize> = std::iter::once(n).chain(self.sample_shape.iter().copied()).collect();
        Some(standard(grad_output).into_shape_with_order(IxDyn(&shape)).expect("unflatten keeps the element count"))
    }
}

/// Inverted dropout: in training each input is zeroed with probability `rate` and the rest are
/// scaled by `1 / (1 − rate)`, so evaluation is the identity.
pub struct Dropout {
    rate: f32,
    /// Per input: 0 if dropped, else the scale (training mode).
    mask: Vec<f32>,
}

impl Dropout {
    pub fn new(rate: f32) -> Dropout {
        Dropout { rate, mask: Vec::new() }
    }
}

impl Layer for Dropout {
    fn forward(&mut self, mut input: Tensor, mode: &mut Mode) -> Tensor {
        let Mode::Train(rng) = mode else { return input };
        let keep_scale = 1.0 / (1.0 - self.rate);
        self.mask.clear();
        self.mask.extend((0..input.len()).map(|_| if rng.random::<f32>() < self.rate { 0.0 } else { keep_scale }));
        for (v, m) in as_slice_mut(&mut input).iter_mut().zip(&self.mask) {
            *v *= m;
        }
        input
    }

    fn backward(&mut self, mut grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        for (g, m) in as_slice_mut(&mut grad_output).iter_mut().zip(&self.mask) {
            *g *= m;
        }
        Some(grad_output)
    }
}

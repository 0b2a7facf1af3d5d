//! Batch normalisation over the channel axis of `[n, c, h, w]` (statistics over n, h, w) or the
//! feature axis of `[n, features]`. Training uses batch statistics and updates running ones;
//! evaluation uses the running ones, so a single face is classified the same in any batch.

use ndarray::IxDyn;

use super::{Layer, Mode, Param};
use crate::engine::tensor::{as_slice, as_slice_mut, Tensor};

const EPSILON: f32 = 1e-5;
/// Weight of the newest batch in the running statistics (PyTorch's default).
const MOMENTUM: f32 = 0.1;

pub struct BatchNorm {
    channels: usize,
    gamma: Param,
    beta: Param,
    running_mean: Tensor,
    running_var: Tensor,
    /// Training mode: normalised inputs and 1/σ per channel, for backward.
    normalized: Option<Tensor>,
    inv_std: Vec<f32>,
}

impl BatchNorm {
    pub fn new(channels: usize) -> BatchNorm {
        BatchNorm {
            channels,
            gamma: Param::new(Tensor::ones(IxDyn(&[channels])), false),
            beta: Param::new(Tensor::zeros(IxDyn(&[channels])), false),
            running_mean: Tensor::zeros(IxDyn(&[channels])),
            running_var: Tensor::ones(IxDyn(&[channels])),
            normalized: None,
            inv_std: Vec::new(),
        }
    }

    /// Visits the input as `(channel, contiguous run of that channel's values)`.
    fn runs(channels: usize, data_len: usize, spatial: usize) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> {
        (0..data_len / spatial).map(move |run| (run % channels, run * spatial..(run + 1) * spatial))
    }
}

impl Layer for BatchNorm {
    fn forward(&mut self, mut input: Tensor, mode: &mut Mode) -> Tensor {
        let n = input.shape()[0];
        let spatial: usize = input.shape()[2..].iter().product();
        let count = (n * spatial) as f32;
        let c = self.channels;
        let x = as_slice_mut(&mut input);
        let (mean, inv_std) = if mode.is_train() {
            let mut sum = vec![0.0f64; c];
            let mut sum_sq = vec![0.0f64; c];
            for (ch, run) in Self::runs(c, x.len(), spatial) {
                for &v in &x[run] {
                    sum[ch] += v as f64;
                    sum_sq[ch] += (v as f64) * (v as f64);
                }
            }
            let mut mean = vec![0.0f32; c];
            let mut inv_std = vec![0.0f32; c];
            let (running_mean, running_var) = (as_slice_mut(&mut self.running_mean), as_slice_mut(&mut self.running_var));
            for ch in 0..c {
                let m = sum[ch] / count as f64;
                let var = (sum_sq[ch] / count as f64 - m * m).max(0.0);
                mean[ch] = m as f32;
                inv_std[ch] = 1.0 / (var as f32 + EPSILON).sqrt();
                // Running variance is the unbiased estimate, as in PyTorch.
                let unbiased = if count > 1.0 { var * count as f64 / (count as f64 - 1.0) } else { var };
                running_mean[ch] = (1.0 - MOMENTUM) * running_mean[ch] + MOMENTUM * m as f32;
                running_var[ch] = (1.0 - MOMENTUM) * running_var[ch] + MOMENTUM * unbiased as f32;
            }
            (mean, inv_std)
        } else {
            let inv_std = as_slice(&self.running_var).iter().map(|v| 1.0 / (v + EPSILON).sqrt()).collect();
            (as_slice(&self.running_mean).to_vec(), inv_std)
        };
        let (gamma, beta) = (as_slice(&self.gamma.value), as_slice(&self.beta.value));
        let mut normalized = if mode.is_train() { Some(Vec::with_capacity(x.len())) } else { None };
        for (ch, run) in Self::runs(c, x.len(), spatial) {
            for v in &mut x[run] {
                let x_hat = (*v - mean[ch]) * inv_std[ch];
                if let Some(normalized) = normalized.as_mut() {
                    normalized.push(x_hat);
                }
                *v = gamma[ch] * x_hat + beta[ch];
            }
        }
        self.normalized = normalized.map(|values| Tensor::from_shape_vec(input.raw_dim(), values).expect("same shape"));
        self.inv_std = inv_std;
        input
    }

    fn backward(&mut self, mut grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let normalized = self.normalized.take().expect("BatchNorm::backward needs a training-mode forward first");
        let n = grad_output.shape()[0];
        let spatial: usize = grad_output.shape()[2..].iter().product();
        let count = (n * spatial) as f32;
        let c = self.channels;
        let x_hat = as_slice(&normalized);
        let dy = as_slice_mut(&mut grad_output);
        let mut sum_dy = vec![0.0f32; c];
        let mut sum_dy_xhat = vec![0.0f32; c];
        for (ch, run) in Self::runs(c, dy.len(), spatial) {
            for (g, xh) in dy[run.clone()].iter().zip(&x_hat[run]) {
                sum_dy[ch] += g;
                sum_dy_xhat[ch] += g * xh;
            }
        }
        let gamma = as_slice(&self.gamma.value).to_vec();
        as_slice_mut(&mut self.gamma.grad).iter_mut().zip(&sum_dy_xhat).for_each(|(g, s)| *g += s);
        as_slice_mut(&mut self.beta.grad).iter_mut().zip(&sum_dy).for_each(|(g, s)| *g += s);
        for (ch, run) in Self::runs(c, dy.len(), spatial) {
            let scale = gamma[ch] * self.inv_std[ch];
            for (g, xh) in dy[run.clone()].iter_mut().zip(&x_hat[run]) {
                // d/dx of γ·(x − μ_B)/σ_B, where the batch mean and σ depend on x too.
                *g = scale * (*g - sum_dy[ch] / count - xh * sum_dy_xhat[ch] / count);
            }
        }
        Some(grad_output)
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.gamma, &self.beta]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }

    fn param_names(&self) -> &'static [&'static str] {
        &["gamma", "beta"]
    }

    fn saved_tensors(&self) -> Vec<(&'static str, &Tensor)> {
        vec![
            ("gamma", &self.gamma.value),
            ("beta", &self.beta.value),
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
        ]
    }

    fn saved_tensors_mut(&mut self) -> Vec<(&'static str, &mut Tensor)> {
        vec![
            ("gamma", &mut self.gamma.value),
            ("beta", &mut self.beta.value),
            ("running_mean", &mut self.running_mean),
            ("running_var", &mut self.running_var),
        ]
    }
}

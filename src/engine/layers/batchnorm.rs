//! Batch normalisation over the channel axis of `[n, c, h, w]` (statistics over n, h, w) or the
//! feature axis of `[n, features]`. Training uses batch statistics and updates running ones;
//! evaluation uses the running ones, so a single face is classified the same in any batch.
//! [`Mode::Recalibrate`] replaces the running statistics with their mean over many batches
//! ("precise batch-norm"): the exponential average kept during training is dominated by the
//! last few augmented batches.

use ndarray::IxDyn;

use super::{Layer, Mode, Param};
use crate::engine::parallel::{map_ranges, map_sample_chunks};
use crate::engine::tensor::{as_slice, as_slice_mut, Tensor};

/// Added to the variance before its square root.
pub const EPSILON: f32 = 1e-5;
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
}

/// Sums of a run and of its squares: f32 lanes the compiler vectorises, added up in f64.
fn sum_and_squares(run: &[f32]) -> (f64, f64) {
    let (mut sum, mut squares) = ([0.0f32; 8], [0.0f32; 8]);
    let chunks = run.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..8 {
            sum[i] += chunk[i];
            squares[i] += chunk[i] * chunk[i];
        }
    }
    let total = |lanes: [f32; 8]| lanes.iter().map(|&v| v as f64).sum::<f64>();
    let tail_sum: f64 = tail.iter().map(|&v| v as f64).sum();
    let tail_squares: f64 = tail.iter().map(|&v| v as f64 * v as f64).sum();
    (total(sum) + tail_sum, total(squares) + tail_squares)
}

/// Sums of `a` and of `a·b`, like [`sum_and_squares`].
fn sum_and_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut sum, mut dot) = ([0.0f32; 8], [0.0f32; 8]);
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            sum[i] += x[i];
            dot[i] += x[i] * y[i];
        }
    }
    let total = |lanes: [f32; 8]| lanes.iter().map(|&v| v as f64).sum::<f64>();
    let tail_sum: f64 = a_tail.iter().map(|&v| v as f64).sum();
    let tail_dot: f64 = a_tail.iter().zip(b_tail).map(|(&x, &y)| x as f64 * y as f64).sum();
    (total(sum) + tail_sum, total(dot) + tail_dot)
}

/// Per-channel pairs of sums over every sample, computed in parallel chunks and added up in
/// chunk order. `runs(sample, channel)` gives the pair for one channel of one sample.
fn per_channel_sums(samples: usize, channels: usize, runs: impl Fn(usize, usize) -> (f64, f64) + Sync + Send) -> Vec<(f64, f64)> {
    let partials = map_ranges(samples, |range| {
        let mut sums = vec![(0.0f64, 0.0f64); channels];
        for sample in range {
            for (ch, total) in sums.iter_mut().enumerate() {
                let (a, b) = runs(sample, ch);
                total.0 += a;
                total.1 += b;
            }
        }
        sums
    });
    let mut sums = vec![(0.0f64, 0.0f64); channels];
    for partial in partials {
        for (total, (a, b)) in sums.iter_mut().zip(partial) {
            total.0 += a;
            total.1 += b;
        }
    }
    sums
}

impl BatchNorm {
    /// Evaluation's y = γ·(x − running mean)/σ + β as one scale and shift per channel.
    fn eval_scale_and_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let (gamma, beta) = (as_slice(&self.gamma.value), as_slice(&self.beta.value));
        let (mean, var) = (as_slice(&self.running_mean), as_slice(&self.running_var));
        let scale: Vec<f32> = (0..self.channels).map(|ch| gamma[ch] / (var[ch] + EPSILON).sqrt()).collect();
        let shift: Vec<f32> = (0..self.channels).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
        (scale, shift)
    }
}

impl Layer for BatchNorm {
    fn forward(&mut self, mut input: Tensor, mode: &mut Mode) -> Tensor {
        let n = input.shape()[0];
        let c = self.channels;
        let spatial: usize = input.shape()[2..].iter().product();
        let sample_len = c * spatial;
        let count = (n * spatial) as f64;
        let (gamma, beta) = (as_slice(&self.gamma.value).to_vec(), as_slice(&self.beta.value).to_vec());
        if matches!(mode, Mode::Eval) {
            let (scale, shift) = self.eval_scale_and_shift();
            map_sample_chunks(as_slice_mut(&mut input), sample_len, |_, out| {
                for (i, run) in out.chunks_exact_mut(spatial).enumerate() {
                    let ch = i % c;
                    run.iter_mut().for_each(|v| *v = *v * scale[ch] + shift[ch]);
                }
            });
            return input;
        }

        let x = as_slice(&input);
        let sums = per_channel_sums(n, c, |sample, ch| sum_and_squares(&x[sample * sample_len + ch * spatial..][..spatial]));
        let mut mean = vec![0.0f32; c];
        let mut inv_std = vec![0.0f32; c];
        let (running_mean, running_var) = (as_slice_mut(&mut self.running_mean), as_slice_mut(&mut self.running_var));
        // Weight of this batch in the running statistics. Training: an exponential average;
        // recalibration: the plain mean over the pass's batches.
        let weight = match mode {
            Mode::Recalibrate { batch } => 1.0 / (*batch as f32 + 1.0),
            _ => MOMENTUM,
        };
        for (ch, &(sum, squares)) in sums.iter().enumerate() {
            let m = sum / count;
            let var = (squares / count - m * m).max(0.0);
            mean[ch] = m as f32;
            inv_std[ch] = 1.0 / (var as f32 + EPSILON).sqrt();
            // Running variance is the unbiased estimate, as in PyTorch.
            let unbiased = (if count > 1.0 { var * count / (count - 1.0) } else { var }) as f32;
            running_mean[ch] = (1.0 - weight) * running_mean[ch] + weight * m as f32;
            running_var[ch] = (1.0 - weight) * running_var[ch] + weight * unbiased;
        }
        let mut normalized = Tensor::zeros(input.raw_dim());
        map_sample_chunks(as_slice_mut(&mut normalized), sample_len, |samples, out| {
            let x = &x[samples.start * sample_len..];
            for (i, (x_hat, x)) in out.chunks_exact_mut(spatial).zip(x.chunks_exact(spatial)).enumerate() {
                let ch = i % c;
                x_hat.iter_mut().zip(x).for_each(|(h, &v)| *h = (v - mean[ch]) * inv_std[ch]);
            }
        });
        let x_hat = as_slice(&normalized);
        map_sample_chunks(as_slice_mut(&mut input), sample_len, |samples, out| {
            let x_hat = &x_hat[samples.start * sample_len..];
            for (i, (y, x_hat)) in out.chunks_exact_mut(spatial).zip(x_hat.chunks_exact(spatial)).enumerate() {
                let ch = i % c;
                y.iter_mut().zip(x_hat).for_each(|(y, &h)| *y = gamma[ch] * h + beta[ch]);
            }
        });
        if mode.is_train() {
            self.normalized = Some(normalized);
            self.inv_std = inv_std;
        }
        input
    }

    fn backward(&mut self, mut grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let normalized = self.normalized.take().expect("BatchNorm::backward needs a training-mode forward first");
        let n = grad_output.shape()[0];
        let c = self.channels;
        let spatial: usize = grad_output.shape()[2..].iter().product();
        let sample_len = c * spatial;
        let count = (n * spatial) as f32;
        let x_hat = as_slice(&normalized);
        let dy = as_slice(&grad_output);
        let sums = per_channel_sums(n, c, |sample, ch| {
            let at = sample * sample_len + ch * spatial;
            sum_and_dot(&dy[at..at + spatial], &x_hat[at..at + spatial])
        });
        let sum_dy: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        let sum_dy_xhat: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
        let gamma = as_slice(&self.gamma.value).to_vec();
        as_slice_mut(&mut self.gamma.grad).iter_mut().zip(&sum_dy_xhat).for_each(|(g, s)| *g += s);
        as_slice_mut(&mut self.beta.grad).iter_mut().zip(&sum_dy).for_each(|(g, s)| *g += s);
        let inv_std = &self.inv_std;
        map_sample_chunks(as_slice_mut(&mut grad_output), sample_len, |samples, out| {
            let x_hat = &x_hat[samples.start * sample_len..];
            for (i, (g, x_hat)) in out.chunks_exact_mut(spatial).zip(x_hat.chunks_exact(spatial)).enumerate() {
                let ch = i % c;
                let scale = gamma[ch] * inv_std[ch];
                let (mean_dy, mean_dy_xhat) = (sum_dy[ch] / count, sum_dy_xhat[ch] / count);
                // d/dx of γ·(x − μ_B)/σ_B, where the batch mean and σ depend on x too.
                g.iter_mut().zip(x_hat).for_each(|(g, &h)| *g = scale * (*g - mean_dy - h * mean_dy_xhat));
            }
        });
        Some(grad_output)
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.gamma, &self.beta]
    }

    fn channel_affine(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        Some(self.eval_scale_and_shift())
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

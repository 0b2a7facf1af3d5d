//! Sharpness-aware minimisation (Foret et al. 2021): replaces the gradient at the weights w
//! with the one at w + ρ·g/‖g‖, the worst point of the ρ-ball to first order, so that steps
//! lead to minima whose whole neighbourhood has a low loss.

use ndarray::Array2;

use crate::engine::loss::softmax_cross_entropy;
use crate::engine::{Mode, Network, Rng, Tensor};

/// Replaces the gradients `network` holds (those at its weights, for `input`) with the
/// gradients at the perturbed weights; the weights are restored before returning, ready for the
/// optimiser step. Batch-norm statistics also see the second pass; they are re-measured after
/// each epoch anyway.
pub(super) fn take_sharpness_aware_gradient(
    network: &mut Network,
    rho: f32,
    input: Tensor,
    targets: &Array2<f32>,
    weights: &[f32],
    rng: &mut Rng,
) {
    let squared_norm: f64 = network.params().iter().flat_map(|p| p.grad.iter()).map(|&g| (g as f64) * (g as f64)).sum();
    let norm = squared_norm.sqrt() as f32;
    if !(norm.is_finite() && norm > 0.0) {
        return;
    }
    let scale = rho / norm;
    let perturbations: Vec<Tensor> = network.params().iter().map(|p| &p.grad * scale).collect();
    for (param, perturbation) in network.params_mut().into_iter().zip(&perturbations) {
        param.value += perturbation;
    }
    let logits = network.forward(input, &mut Mode::Train(rng));
    let out = softmax_cross_entropy(logits.view(), targets.view(), Some(weights));
    network.zero_grad();
    network.backward(out.grad_logits);
    for (param, perturbation) in network.params_mut().into_iter().zip(&perturbations) {
        param.value -= perturbation;
    }
}

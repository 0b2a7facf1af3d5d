//! Mixup (Zhang et al. 2018): each sample of a batch blends with a shuffled partner, inputs,
//! targets and sample weights alike, by one λ ~ Beta(α, α) per batch.

use ndarray::Array2;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};

use crate::data::FACE_PIXELS;
use crate::engine::Rng;

pub(super) fn mixup(inputs: &mut [f32], targets: &mut Array2<f32>, weights: &mut [f32], alpha: f32, rng: &mut Rng) {
    let lambda = Beta::new(alpha, alpha).map(|b| b.sample(rng)).unwrap_or(1.0);
    // The larger share keeps each sample's own label dominant, which the accuracy counts.
    let lambda = lambda.max(1.0 - lambda);
    let n = weights.len();
    let mut partner: Vec<usize> = (0..n).collect();
    partner.shuffle(rng);
    let (original_inputs, original_targets, original_weights) = (inputs.to_vec(), targets.clone(), weights.to_vec());
    for i in 0..n {
        let j = partner[i];
        let (a, b) = (&original_inputs[i * FACE_PIXELS..(i + 1) * FACE_PIXELS], &original_inputs[j * FACE_PIXELS..(j + 1) * FACE_PIXELS]);
        for ((o, x), y) in inputs[i * FACE_PIXELS..(i + 1) * FACE_PIXELS].iter_mut().zip(a).zip(b) {
            *o = lambda * x + (1.0 - lambda) * y;
        }
        let mixed = &original_targets.row(i) * lambda + &original_targets.row(j) * (1.0 - lambda);
        targets.row_mut(i).assign(&mixed);
        weights[i] = lambda * original_weights[i] + (1.0 - lambda) * original_weights[j];
    }
}

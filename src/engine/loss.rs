//! Softmax cross-entropy on logits `[n, classes]` against soft targets (one-hot, label-smoothed
//! or mixed-up), with optional per-sample weights (class weighting).

use ndarray::{Array2, ArrayView2, Axis};

/// Row-wise softmax, stable for large logits.
pub fn softmax(logits: ArrayView2<f32>) -> Array2<f32> {
    let mut probs = logits.to_owned();
    for mut row in probs.axis_iter_mut(Axis(0)) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    probs
}

/// Row-wise softmax of `logits / temperature`: temperature scaling, which leaves each row's
/// largest value where it is and moves only how sure the probabilities say the model is (above
/// 1 softer, below 1 sharper).
pub fn softmax_at_temperature(logits: ArrayView2<f32>, temperature: f32) -> Array2<f32> {
    if temperature == 1.0 {
        return softmax(logits);
    }
    softmax(logits.mapv(|z| z / temperature).view())
}

/// Targets for integer labels: `1 − smoothing` on the true class plus `smoothing / classes`
/// spread over all classes.
pub fn smoothed_one_hot(labels: &[u8], classes: usize, smoothing: f32) -> Array2<f32> {
    let mut targets = Array2::from_elem((labels.len(), classes), smoothing / classes as f32);
    for (mut row, &label) in targets.axis_iter_mut(Axis(0)).zip(labels) {
        row[label as usize] += 1.0 - smoothing;
    }
    targets
}

pub struct LossOutput {
    /// Weighted mean cross-entropy over the batch.
    pub loss: f32,
    /// d loss / d logits, `[n, classes]`.
    pub grad_logits: Array2<f32>,
    pub probs: Array2<f32>,
}

/// `loss = Σᵢ wᵢ · (−Σₖ tᵢₖ log pᵢₖ) / Σᵢ wᵢ` with `p = softmax(logits)`; every target row sums to 1.
/// Without `sample_weights` every wᵢ is 1.
pub fn softmax_cross_entropy(logits: ArrayView2<f32>, targets: ArrayView2<f32>, sample_weights: Option<&[f32]>) -> LossOutput {
    let probs = softmax(logits);
    let n = logits.nrows();
    let weight = |i: usize| sample_weights.map_or(1.0, |w| w[i]);
    let total_weight: f32 = (0..n).map(weight).sum::<f32>().max(f32::MIN_POSITIVE);
    let mut loss = 0.0f64;
    let mut grad_logits = Array2::zeros(probs.raw_dim());
    for i in 0..n {
        let w = weight(i) / total_weight;
        for k in 0..probs.ncols() {
            let (p, t) = (probs[(i, k)], targets[(i, k)]);
            if t > 0.0 {
                loss -= (w * t * p.max(1e-30).ln()) as f64;
            }
            grad_logits[(i, k)] = w * (p - t);
        }
    }
    LossOutput { loss: loss as f32, grad_logits, probs }
}

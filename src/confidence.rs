//! Probabilities that mean what they say: temperature scaling (Guo et al. 2017, "On
//! Calibration of Modern Neural Networks"), one number `T` that the logits are divided by
//! before the softmax, fitted on held-out faces so that a face given 70% is right about 70% of
//! the time; the expected calibration error and negative log-likelihood that measure it; and
//! the top probability below which a face is shown as uncertain. `T` moves no face's class.
//! (Not `train::calibrate`, which re-fits a model to one person's faces.)

use ndarray::{ArrayView2, Axis};
use serde::Serialize;

use crate::data::Dataset;
use crate::engine::loss::softmax_at_temperature;
use crate::engine::Network;
use crate::inference::{argmax, row_logits, Evaluation, EvaluationTally};

/// The temperatures searched, `[1/20, 20]`: far past any trained model's.
const TEMPERATURE_RANGE: (f64, f64) = (0.05, 20.0);

/// Mean negative log-likelihood of `labels` under softmax(`logits` / `temperature`).
pub fn negative_log_likelihood(logits: ArrayView2<f32>, labels: &[u8], temperature: f64) -> f64 {
    let total: f64 = logits
        .axis_iter(Axis(0))
        .zip(labels)
        .map(|(row, &label)| {
            let scaled: Vec<f64> = row.iter().map(|&z| z as f64 / temperature).collect();
            let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = max + scaled.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            log_sum - scaled[usize::from(label)]
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// The temperature that minimises the negative log-likelihood of `labels` (one per row of
/// `logits`): a golden-section search on log T, where the likelihood has one minimum (it is
/// convex in 1/T). 1 when there are no rows.
pub fn fit_temperature(logits: ArrayView2<f32>, labels: &[u8]) -> f32 {
    if labels.is_empty() {
        return 1.0;
    }
    let nll = |log_t: f64| negative_log_likelihood(logits, labels, log_t.exp());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (TEMPERATURE_RANGE.0.ln(), TEMPERATURE_RANGE.1.ln());
    let (mut a, mut b) = (high - ratio * (high - low), low + ratio * (high - low));
    let (mut nll_a, mut nll_b) = (nll(a), nll(b));
    while high - low > 1e-6 {
        if nll_a < nll_b {
            (high, b, nll_b) = (b, a, nll_a);
            a = high - ratio * (high - low);
            nll_a = nll(a);
        } else {
            (low, a, nll_a) = (a, b, nll_b);
            b = low + ratio * (high - low);
            nll_b = nll(b);
        }
    }
    ((low + high) / 2.0).exp() as f32
}

/// Accuracy, NLL (`loss`) and expected calibration error of probabilities `[n, 7]`.
pub fn score_probabilities(probs: ArrayView2<f32>, labels: &[u8]) -> Evaluation {
    let mut tally = EvaluationTally::default();
    tally.add(labels.iter().copied(), probs);
    tally.finish()
}

/// Faces on one side of a threshold, and how many of them the model got right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Share {
    pub n: usize,
    pub accuracy: f32,
}

/// The faces whose top probability is below `threshold`, those just below it (within
/// [`NEAR`]), and the others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ThresholdSplit {
    pub threshold: f32,
    pub below: Share,
    pub just_below: Share,
    pub at_or_above: Share,
}

/// How far below a threshold a face's top probability is "just below" it: wide enough to hold
/// a few hundred of 3,589 PublicTest faces near 0.5 (a standard error near 2.5 points).
pub const NEAR: f32 = 0.1;

/// Splits the faces of `probs` (with their `labels`) at each threshold.
pub fn split_at_thresholds(probs: ArrayView2<f32>, labels: &[u8], thresholds: &[f32]) -> Vec<ThresholdSplit> {
    let faces: Vec<(f32, bool)> =
        probs.axis_iter(Axis(0)).zip(labels).map(|(p, &label)| (p[argmax(p)], argmax(p) == usize::from(label))).collect();
    let share = |faces: &mut dyn Iterator<Item = &(f32, bool)>| {
        let (n, right) = faces.fold((0, 0), |(n, right), &(_, correct)| (n + 1, right + usize::from(correct)));
        Share { n, accuracy: if n > 0 { right as f32 / n as f32 } else { 0.0 } }
    };
    thresholds
        .iter()
        .map(|&threshold| ThresholdSplit {
            threshold,
            below: share(&mut faces.iter().filter(|(top, _)| *top < threshold)),
            just_below: share(&mut faces.iter().filter(|(top, _)| *top < threshold && *top >= threshold - NEAR)),
            at_or_above: share(&mut faces.iter().filter(|(top, _)| *top >= threshold)),
        })
        .collect()
}

/// Candidate thresholds: 0.01 to 1 in steps of 0.01.
pub fn threshold_grid() -> Vec<f32> {
    (1..=100).map(|i| i as f32 / 100.0).collect()
}

/// The uncertain threshold: the largest of [`threshold_grid`] such that the faces just below
/// it (top probability in `[t − NEAR, t)`) are right less than half the time. A face marked
/// uncertain is then one whose class is, at its confidence, more often wrong than right. (The
/// faces below a threshold taken together stay under half right up to about 0.7 on FER2013,
/// where marking them would mark half the faces, most of those near the threshold right.)
/// `None` when no threshold has such faces below it.
pub fn choose_uncertain_below(splits: &[ThresholdSplit]) -> Option<f32> {
    splits.iter().filter(|s| s.just_below.n > 0 && s.just_below.accuracy < 0.5).map(|s| s.threshold).reduce(f32::max)
}

/// What [`fit_confidence`] found.
#[derive(Clone, Debug, Serialize)]
pub struct ConfidenceFit {
    pub temperature: f32,
    /// The probabilities without a temperature (T = 1) and with the fitted one.
    pub before: Evaluation,
    pub after: Evaluation,
    /// See [`choose_uncertain_below`]; with the fitted temperature.
    pub uncertain_below: Option<f32>,
    /// Every threshold of [`threshold_grid`], the faces below and at or above it.
    pub splits: Vec<ThresholdSplit>,
}

impl ConfidenceFit {
    /// The split at the chosen uncertain threshold.
    pub fn uncertain_split(&self) -> Option<&ThresholdSplit> {
        self.uncertain_below.and_then(|t| self.splits.iter().find(|s| s.threshold == t))
    }
}

/// Fits the temperature and the uncertain threshold of `network` on `rows` of `data` (one
/// view of each face, in the arithmetic the network is set to: call `set_int8_inference`
/// first for a model the camera runs in integers). The network's own temperature is ignored.
pub fn fit_confidence(network: &mut Network, data: &Dataset, rows: &[usize]) -> ConfidenceFit {
    let logits = row_logits(network, data, rows);
    let labels: Vec<u8> = rows.iter().map(|&r| data.label(r)).collect();
    let temperature = fit_temperature(logits.view(), &labels);
    let before = score_probabilities(softmax_at_temperature(logits.view(), 1.0).view(), &labels);
    let scaled = softmax_at_temperature(logits.view(), temperature);
    let after = score_probabilities(scaled.view(), &labels);
    let splits = split_at_thresholds(scaled.view(), &labels, &threshold_grid());
    let uncertain_below = choose_uncertain_below(&splits);
    ConfidenceFit { temperature, before, after, uncertain_below, splits }
}

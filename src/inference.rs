//! Inference: class probabilities for faces, averaged over test-time views, and evaluation
//! (accuracy, per-class accuracy, confusion matrix, calibration error) over rows of a dataset.
//! The camera, the CLI's `eval` and the end of every training epoch all come through here.

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::data::input::{face_to_input, Warp};
use crate::data::{Dataset, FACE_PIXELS, NUM_CLASSES};
use crate::engine::network::batch_tensor;
use crate::engine::parallel::map_sample_chunks;
use crate::engine::{Network, Tensor};

/// Test-time augmentation: average the probabilities over several views of each face.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tta {
    /// The face as it is (1 forward pass).
    None,
    /// The face and its mirror image (2 passes).
    Flip,
    /// The face and its mirror, each also shifted 2 px up, down, left and right (10 passes).
    FlipShift,
}

impl Tta {
    fn warps(self) -> Vec<Warp> {
        let flips: &[bool] = if self == Tta::None { &[false] } else { &[false, true] };
        let shifts: &[(f32, f32)] =
            if self == Tta::FlipShift { &[(0.0, 0.0), (2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)] } else { &[(0.0, 0.0)] };
        flips
            .iter()
            .flat_map(|&flip| shifts.iter().map(move |&(shift_x, shift_y)| Warp { shift_x, shift_y, flip, ..Warp::IDENTITY }))
            .collect()
    }

    /// Forward passes per face.
    pub fn views(self) -> usize {
        self.warps().len()
    }
}

/// The index of the largest value (the first of equals).
pub fn argmax(values: ArrayView1<f32>) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// Class probabilities `[n, 7]` for faces laid end to end (`n × 2304` bytes), averaged over
/// the test-time views (each view's through the network's temperature).
pub fn predict_faces(network: &mut Network, faces_u8: &[u8], tta: Tta) -> Array2<f32> {
    let n = faces_u8.len() / FACE_PIXELS;
    let warps = tta.warps();
    let mut probs = Array2::<f32>::zeros((n, NUM_CLASSES));
    for warp in &warps {
        probs += &network.predict(face_inputs(faces_u8, warp));
    }
    probs / warps.len() as f32
}

/// The network's logits `[n, 7]` for faces laid end to end, as they are (one view), before
/// the temperature: what `confidence::fit_temperature` fits it on.
pub fn face_logits(network: &mut Network, faces_u8: &[u8]) -> Array2<f32> {
    network.logits(face_inputs(faces_u8, &Warp::IDENTITY))
}

/// The batch `[n, 1, 48, 48]` of one view of each face.
fn face_inputs(faces_u8: &[u8], warp: &Warp) -> Tensor {
    let n = faces_u8.len() / FACE_PIXELS;
    let mut inputs = vec![0.0f32; n * FACE_PIXELS];
    map_sample_chunks(&mut inputs, FACE_PIXELS, |samples, out| {
        for (j, i) in samples.enumerate() {
            let face = &faces_u8[i * FACE_PIXELS..(i + 1) * FACE_PIXELS];
            let out = &mut out[j * FACE_PIXELS..(j + 1) * FACE_PIXELS];
            if *warp == Warp::IDENTITY {
                face_to_input(face, out);
            } else {
                warp.apply(face, out);
            }
        }
    });
    batch_tensor([1, 48, 48], inputs).expect("whole faces")
}

/// Rows evaluated per forward pass: bounds memory (activations of the largest preset).
const EVAL_BATCH: usize = 256;

/// [`predict_faces`] over `rows` of `data`, [`EVAL_BATCH`] rows at a time: `visit` gets each
/// chunk of rows and their probabilities.
pub fn predict_rows(network: &mut Network, data: &Dataset, rows: &[usize], tta: Tta, mut visit: impl FnMut(&[usize], Array2<f32>)) {
    for chunk in rows.chunks(EVAL_BATCH) {
        let faces: Vec<u8> = chunk.iter().flat_map(|&r| data.face(r).iter().copied()).collect();
        visit(chunk, predict_faces(network, &faces, tta));
    }
}

/// [`face_logits`] for `rows` of `data`, in their order, [`EVAL_BATCH`] rows at a time.
pub fn row_logits(network: &mut Network, data: &Dataset, rows: &[usize]) -> Array2<f32> {
    let mut logits = Array2::zeros((0, NUM_CLASSES));
    for chunk in rows.chunks(EVAL_BATCH) {
        let faces: Vec<u8> = chunk.iter().flat_map(|&r| data.face(r).iter().copied()).collect();
        logits.append(Axis(0), face_logits(network, &faces).view()).expect("rows of 7 logits");
    }
    logits
}

/// Accuracy, per-class accuracy (recall) and the confusion matrix over a set of rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub accuracy: f32,
    pub n: usize,
    pub per_class: [f32; NUM_CLASSES],
    /// `confusion[true][predicted]`
    pub confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
    /// Mean cross-entropy of the true labels.
    pub loss: f32,
    /// Expected calibration error of the probabilities (see [`ReliabilityBins`]).
    #[serde(default)]
    pub ece: f32,
}

pub fn evaluate(network: &mut Network, data: &Dataset, rows: &[usize], tta: Tta) -> Evaluation {
    let mut tally = EvaluationTally::default();
    predict_rows(network, data, rows, tta, |chunk, probs| tally.add(chunk.iter().map(|&row| data.label(row)), probs.view()));
    tally.finish()
}

/// Counts predictions against labels, a batch at a time, into an [`Evaluation`].
#[derive(Default)]
pub struct EvaluationTally {
    confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
    loss: f64,
    reliability: ReliabilityBins,
}

impl EvaluationTally {
    /// Probabilities `[n, 7]` and the `n` true labels.
    pub fn add(&mut self, labels: impl IntoIterator<Item = u8>, probs: ArrayView2<f32>) {
        for (label, p) in labels.into_iter().zip(probs.axis_iter(Axis(0))) {
            let label = usize::from(label);
            let predicted = argmax(p);
            self.confusion[label][predicted] += 1;
            self.loss -= (p[label].max(1e-30) as f64).ln();
            self.reliability.add(p[predicted], predicted == label);
        }
    }

    pub fn finish(self) -> Evaluation {
        let confusion = self.confusion;
        let n: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..NUM_CLASSES).map(|k| confusion[k][k]).sum();
        let mut per_class = [0.0; NUM_CLASSES];
        for (k, acc) in per_class.iter_mut().enumerate() {
            let total: usize = confusion[k].iter().sum();
            *acc = if total > 0 { confusion[k][k] as f32 / total as f32 } else { 0.0 };
        }
        Evaluation {
            accuracy: correct as f32 / n.max(1) as f32,
            n,
            per_class,
            confusion,
            loss: (self.loss / n.max(1) as f64) as f32,
            ece: self.reliability.expected_calibration_error() as f32,
        }
    }
}

/// Bins of equal width on the top probability (the confidence), each counting its faces, their
/// summed confidence and how many the model got right: a reliability diagram, and from it
/// the expected calibration error, `Σ_b (n_b / n) · |accuracy_b − mean confidence_b|`
/// (Guo et al. 2017, "On Calibration of Modern Neural Networks", with their 15 bins).
#[derive(Clone, Debug, PartialEq)]
pub struct ReliabilityBins {
    pub count: Vec<usize>,
    pub confidence: Vec<f64>,
    pub correct: Vec<usize>,
}

/// The bins of [`ReliabilityBins::default`].
pub const ECE_BINS: usize = 15;

impl Default for ReliabilityBins {
    fn default() -> ReliabilityBins {
        ReliabilityBins::new(ECE_BINS)
    }
}

impl ReliabilityBins {
    pub fn new(bins: usize) -> ReliabilityBins {
        let bins = bins.max(1);
        ReliabilityBins { count: vec![0; bins], confidence: vec![0.0; bins], correct: vec![0; bins] }
    }

    /// One face: its top probability and whether that class was the true one. Bin `b` holds
    /// confidences in `(b / bins, (b + 1) / bins]`.
    pub fn add(&mut self, confidence: f32, correct: bool) {
        let bins = self.count.len();
        let bin = ((confidence as f64 * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        self.count[bin] += 1;
        self.confidence[bin] += confidence as f64;
        self.correct[bin] += usize::from(correct);
    }

    /// 0 for no faces.
    pub fn expected_calibration_error(&self) -> f64 {
        let n: usize = self.count.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let gaps = (0..self.count.len()).filter(|&b| self.count[b] > 0).map(|b| (self.correct[b] as f64 - self.confidence[b]).abs());
        gaps.sum::<f64>() / n as f64
    }
}

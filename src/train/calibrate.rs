//! Calibration to one person: the model's classifier (its last dense layer) re-fitted on that
//! person's own captures of each expression, starting from the model's weights and pulled back
//! towards them, so that a model trained on FER2013's strangers reads the face at this camera.
//!
//! The layers below the classifier stay as they are. Their output (the features) is computed
//! once per capture, for several augmented views of it, and cached: the fit is then a few
//! hundred small matrix products, and the held-out captures (and FER2013 rows, when given) are
//! scored before and after from the same cached features. Re-fitting more layers would need a
//! forward and backward pass through the whole network for every step, which does not fit the
//! page's seconds on a laptop.
//!
//! The work is cut into [`Calibration::advance`] calls of a fraction of a second each, so the
//! page's worker can report progress and stay responsive; [`calibrate`] runs them all.

use ndarray::{Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{derive_seed, BATCH_STREAM, SHUFFLE_STREAM};
use crate::data::input::{augment_face, face_to_input, AugmentConfig};
use crate::data::{Dataset, FACE_PIXELS, NUM_CLASSES};
use crate::engine::loss::{smoothed_one_hot, softmax_cross_entropy};
use crate::engine::network::batch_tensor;
use crate::engine::parallel::map_sample_chunks;
use crate::engine::personal::{appearance_statistics, AppearanceGate, Personal, APPEARANCE_STATISTICS};
use crate::engine::{LayerSpec, Mode, ModelSpec, Network, Optimizer, OptimizerKind, Rng, Tensor};
use crate::inference::{argmax, Evaluation, EvaluationTally};
use crate::models::ModelMetadata;
use crate::{FerError, Result};

/// How a calibration is done. The defaults were chosen by measurement (docs/calibration.md);
/// options left out of a JSON object take them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CalibrationConfig {
    /// The share of each expression's captures, its last ones, kept out of the fit to score it.
    /// The last, not a random draw: neighbouring frames are near copies of each other.
    pub held_out_share: f32,
    /// How far the batch-norm statistics move to those of the fitted captures: 0 keeps the
    /// model's, 1 takes the captures' (AdaBN, Li et al. 2016). A new camera, light or person
    /// shifts every layer's statistics, and re-measuring them undoes much of the shift; the
    /// price is accuracy on faces that do not look like the captures.
    pub adapt_batch_norm: f32,
    /// Views of each fitted capture: the capture itself, then randomly augmented copies.
    pub views: usize,
    pub augment: AugmentConfig,
    /// Passes over the cached features.
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    /// The pull towards the starting classifier, λ in λ‖W − W₀‖² (L2-SP, Li et al. 2018): it
    /// keeps what the model knows of other faces where the captures say nothing.
    pub anchor: f32,
    pub label_smoothing: f32,
    /// With reference rows (FER2013) given: their share of the fit's total weight.
    pub replay_weight: f32,
    /// Use the calibrated weights only for faces that look like the captures (brightness,
    /// contrast, light, sharpness, noise: `engine::personal`), and the model's own weights for
    /// the rest. Without the gate every face goes through the calibrated weights.
    pub gate: bool,
    pub seed: u64,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            held_out_share: 0.25,
            adapt_batch_norm: 1.0,
            views: 8,
            augment: AugmentConfig { max_shift: 3.0, max_rotation_deg: 10.0, max_scale: 0.08, flip: true, erase_probability: 0.25 },
            epochs: 40,
            batch_size: 64,
            learning_rate: 1e-3,
            anchor: 0.1,
            label_smoothing: 0.1,
            replay_weight: 0.5,
            gate: true,
            seed: 1,
        }
    }
}

impl CalibrationConfig {
    pub fn validate(&self) -> Result<()> {
        let problem = if !(0.0..1.0).contains(&self.held_out_share) {
            Some(format!("the held-out share {} must be at least 0 and below 1", self.held_out_share))
        } else if !(0.0..=1.0).contains(&self.adapt_batch_norm) {
            Some(format!("the batch-norm adaptation {} must be 0 to 1", self.adapt_batch_norm))
        } else if self.views == 0 || self.views > 64 {
            Some(format!("views per capture {} must be 1 to 64", self.views))
        } else if self.epochs == 0 || self.epochs > 10_000 {
            Some(format!("epochs {} must be 1 to 10000", self.epochs))
        } else if self.batch_size == 0 {
            Some("the batch size must be at least 1".into())
        } else if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            Some(format!("the learning rate {} must be a positive number", self.learning_rate))
        } else if !(self.anchor.is_finite() && self.anchor >= 0.0) {
            Some(format!("the anchor strength {} must be 0 or more", self.anchor))
        } else if !(0.0..1.0).contains(&self.label_smoothing) {
            Some(format!("label smoothing {} must be at least 0 and below 1", self.label_smoothing))
        } else if !(0.0..1.0).contains(&self.replay_weight) {
            Some(format!("the replay weight {} must be at least 0 and below 1", self.replay_weight))
        } else {
            self.augment.validate().err()
        };
        match problem {
            Some(message) => Err(FerError::Config(format!("calibration: {message}"))),
            None => Ok(()),
        }
    }
}

/// Which captures are fitted and which score the fit: per expression, the last
/// `held_out_share` of its captures in capture order (at least one when it has two or more).
pub fn split_captures(labels: &[u8], held_out_share: f32) -> (Vec<usize>, Vec<usize>) {
    let (mut fit, mut held_out) = (Vec::new(), Vec::new());
    for class in 0..NUM_CLASSES as u8 {
        let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        let keep = if rows.len() >= 2 { ((rows.len() as f32 * held_out_share).round() as usize).clamp(1, rows.len() - 1) } else { 0 };
        let keep = if held_out_share > 0.0 { keep } else { 0 };
        fit.extend_from_slice(&rows[..rows.len() - keep]);
        held_out.extend_from_slice(&rows[rows.len() - keep..]);
    }
    fit.sort_unstable();
    held_out.sort_unstable();
    (fit, held_out)
}

/// Accuracy on the same faces with the starting classifier and with the calibrated one.
#[derive(Clone, Debug, Serialize)]
pub struct BeforeAfter {
    pub before: Evaluation,
    pub after: Evaluation,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibrationReport {
    /// Captures fitted, and kept out to score the fit, per expression (FER2013 order).
    pub fitted: [usize; NUM_CLASSES],
    pub held_out: [usize; NUM_CLASSES],
    /// The held-out captures (none when every expression had a single capture).
    pub held_out_accuracy: Option<BeforeAfter>,
    /// The reference rows given for checking (FER2013 PublicTest, say): what calibrating cost
    /// on other people's faces.
    pub reference_accuracy: Option<BeforeAfter>,
    /// The fit's mean loss in its last pass.
    pub final_loss: Option<f32>,
    /// Held-out captures that the calibrated model reads through its personal weights.
    pub held_out_read_personally: Option<f32>,
    /// What calibrating risks on ordinary faces, measured on the reference faces shipped with
    /// the library (FER2013 Training faces' appearance statistics).
    pub reference_faces: ReferenceFaces,
    /// Whether the calibrated model replaces the current one, and why.
    pub verdict: Verdict,
}

/// The shipped reference faces that the gate sends to the personal weights. Those are the only
/// ones the calibrated model can read differently, so the share is the most accuracy it can
/// lose on them.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceFaces {
    pub faces: usize,
    pub read_personally: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// True when the calibrated model is kept; false when the current model stays.
    pub accepted: bool,
    pub reason: String,
}

/// Where a calibration stands, after each [`Calibration::advance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum CalibrationProgress {
    /// Faces passed through the layers below the classifier, of all to pass.
    Features {
        done: usize,
        total: usize,
    },
    /// Passes over the cached features.
    Fitting {
        done: usize,
        total: usize,
    },
    Finished,
}

/// FER2013 faces that take part: `replay` rows are fitted alongside the captures (so that
/// the classifier keeps working on other people), `check` rows are scored before and after.
pub struct ReferenceRows<'a> {
    pub data: &'a Dataset,
    pub replay: &'a [usize],
    pub check: &'a [usize],
}

/// The cached features of one group of faces, `d` values a face, with their labels.
#[derive(Default)]
struct FeatureSet {
    values: Vec<f32>,
    labels: Vec<u8>,
    /// Each face's weight in the fit's loss (unused for scored sets).
    weights: Vec<f32>,
}

impl FeatureSet {
    fn len(&self) -> usize {
        self.labels.len()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Scored by the model as it was, before anything changes: a held-out capture or a check
    /// row (`check` says which).
    Before {
        check: bool,
    },
    Fit,
    HeldOut,
    Replay,
    Check,
}

/// One face to pass through the feature layers: a row of `Calibration::faces`, the view of
/// it (0 = as it is) and the group its features go to.
struct FeatureJob {
    face: usize,
    view: usize,
    group: Group,
}

/// Capture faces per forward pass when re-measuring batch-norm statistics.
const ADAPTATION_BATCH: usize = 256;
/// Faces per forward pass through the feature layers: enough for matrix products to pay off,
/// few enough that one `advance` stays well under a second for the default model.
const FEATURE_BATCH: usize = 32;
/// Samples of the fit per `advance` call (in whole passes).
const FIT_SAMPLES_PER_ADVANCE: usize = 20_000;
/// Faces a [`FeatureSet`] for scoring is predicted in at a time.
const SCORE_BATCH: usize = 512;

pub struct Calibration {
    /// The model as given; it stays the model when the calibration does not help.
    start: Network,
    /// The model's own weights, adapted to the captures: the personal branch to be.
    network: Network,
    /// The first layer of the classifier re-fitted: the last dense layer, with the dropout
    /// right before it.
    head_start: usize,
    /// Flatten, then the model's layers from `head_start` on, taking the cached features.
    head: Network,
    /// The classifier's starting tensors (weights, bias), in `head.params()` order.
    head_start_values: Vec<Tensor>,
    config: CalibrationConfig,
    /// The captures, then the reference rows (replay and check) copied in.
    faces: Dataset,
    jobs: Vec<FeatureJob>,
    next_job: usize,
    fit_rows: Vec<usize>,
    /// The held-out captures and the check rows as the starting model reads them.
    before_held_out: Vec<Prediction>,
    before_check: Vec<Prediction>,
    /// Appearance statistics of the fitted and held-out captures and of the check rows.
    appearance_fit: Vec<[f32; APPEARANCE_STATISTICS]>,
    appearance_held_out: Vec<[f32; APPEARANCE_STATISTICS]>,
    appearance_check: Vec<[f32; APPEARANCE_STATISTICS]>,
    adapted: bool,
    fit: FeatureSet,
    held_out_set: FeatureSet,
    replay: FeatureSet,
    check: FeatureSet,
    fitted: [usize; NUM_CLASSES],
    held_out: [usize; NUM_CLASSES],
    optimizer: Optimizer,
    epochs_done: usize,
    fit_weighed: bool,
    final_loss: Option<f32>,
    report: Option<CalibrationReport>,
    /// The calibrated model: its own weights with the personal branch.
    calibrated: Option<Network>,
}

/// One face's label and a model's probabilities for it.
#[derive(Clone, Copy)]
struct Prediction {
    label: u8,
    probabilities: [f32; NUM_CLASSES],
}

impl Prediction {
    fn is_right(&self) -> bool {
        argmax(ndarray::ArrayView1::from(&self.probabilities[..])) == usize::from(self.label)
    }
}

/// The most of the shipped reference faces that a calibrated model may read through its
/// personal weights: what it may lose on ordinary faces, at worst.
pub const MOST_REFERENCE_FACES_READ_PERSONALLY: f32 = 0.05;
/// The most a calibrated model may lose on FER2013 check rows, when they are given.
pub const MOST_CHECK_ACCURACY_LOST: f32 = 0.05;
/// How sure the held-out captures must make it that the calibrated model reads them better:
/// the one-sided z of a sign test over the captures the two models read differently.
const GAIN_Z: f32 = 1.645;

impl Calibration {
    /// Prepares to calibrate `network` on `captures` (every row a capture labelled with its
    /// expression, in capture order; usages are ignored), with FER2013 rows to keep and to
    /// score when given.
    pub fn new(network: Network, captures: &Dataset, reference: Option<ReferenceRows>, config: CalibrationConfig) -> Result<Calibration> {
        config.validate()?;
        if captures.is_empty() {
            return Err(FerError::Data("there are no captures to calibrate on: capture a few seconds of each expression first".into()));
        }
        let (fit_rows, held_out_rows) = split_captures(captures.labels(), config.held_out_share);
        let head_start = classifier_start(network.spec())?;
        // A calibrated model is calibrated again from its own weights.
        let mut network = network;
        network.set_personal(None);
        let head = head_network(&network, head_start)?;
        let head_start_values = head.params().iter().map(|p| p.value.clone()).collect();
        let appearance = |data: &Dataset, rows: &mut dyn Iterator<Item = usize>| rows.map(|r| face_appearance(data.face(r))).collect();
        let appearance_fit = appearance(captures, &mut fit_rows.iter().copied());
        let appearance_held_out = appearance(captures, &mut held_out_rows.iter().copied());
        let appearance_check = match &reference {
            Some(reference) => appearance(reference.data, &mut reference.check.iter().copied().filter(|&r| r < reference.data.len())),
            None => Vec::new(),
        };

        let mut faces = Dataset::new();
        let mut jobs = Vec::new();
        for i in 0..captures.len() {
            faces.push(captures.face(i), captures.label(i), captures.usage(i))?;
        }
        // The reference rows are copied after the captures; each is scored before (check rows)
        // and passed through the feature layers (replay and check rows).
        let mut reference_faces = Vec::new();
        if let Some(reference) = &reference {
            for (rows, group) in [(reference.replay, Group::Replay), (reference.check, Group::Check)] {
                for &row in rows {
                    if row >= reference.data.len() {
                        return Err(FerError::Data(format!(
                            "reference row {row} is past the end of the data ({} rows)",
                            reference.data.len()
                        )));
                    }
                    reference_faces.push((faces.len(), group));
                    faces.push(reference.data.face(row), reference.data.label(row), reference.data.usage(row))?;
                }
            }
        }
        let checks = reference_faces.iter().filter(|(_, group)| *group == Group::Check).map(|&(face, _)| face);
        jobs.extend(held_out_rows.iter().map(|&face| FeatureJob { face, view: 0, group: Group::Before { check: false } }));
        jobs.extend(checks.map(|face| FeatureJob { face, view: 0, group: Group::Before { check: true } }));
        for &row in &fit_rows {
            jobs.extend((0..config.views).map(|view| FeatureJob { face: row, view, group: Group::Fit }));
        }
        jobs.extend(held_out_rows.iter().map(|&face| FeatureJob { face, view: 0, group: Group::HeldOut }));
        jobs.extend(reference_faces.iter().map(|&(face, group)| FeatureJob { face, view: 0, group }));
        let count = |rows: &[usize]| {
            let mut counts = [0; NUM_CLASSES];
            rows.iter().for_each(|&r| counts[usize::from(captures.label(r))] += 1);
            counts
        };
        Ok(Calibration {
            start: network.copy_without_personal(),
            network,
            head_start,
            head,
            head_start_values,
            appearance_fit,
            appearance_held_out,
            appearance_check,
            calibrated: None,
            faces,
            jobs,
            next_job: 0,
            before_held_out: Vec::new(),
            before_check: Vec::new(),
            adapted: false,
            fit: FeatureSet::default(),
            held_out_set: FeatureSet::default(),
            replay: FeatureSet::default(),
            check: FeatureSet::default(),
            fitted: count(&fit_rows),
            held_out: count(&held_out_rows),
            fit_rows,
            optimizer: Optimizer::new(OptimizerKind::adam(), 0.0),
            epochs_done: 0,
            fit_weighed: false,
            final_loss: None,
            report: None,
            config,
        })
    }

    pub fn config(&self) -> &CalibrationConfig {
        &self.config
    }

    /// Does the next fraction of a second of work: a batch of faces through the feature
    /// layers, then a few passes of the fit, then the scoring. Returns where it now stands.
    pub fn advance(&mut self) -> CalibrationProgress {
        if self.next_job < self.jobs.len() {
            let scoring_before = matches!(self.jobs[self.next_job].group, Group::Before { .. });
            if !scoring_before && !self.adapted {
                self.adapt_batch_norm();
            } else {
                self.pass_faces();
            }
            return CalibrationProgress::Features { done: self.next_job, total: self.jobs.len() };
        }
        if !self.fit_weighed {
            self.weigh_fit_samples();
        }
        if self.epochs_done < self.config.epochs {
            let samples = (self.fit.len() + self.replay.len()).max(1);
            let passes = (FIT_SAMPLES_PER_ADVANCE / samples).max(1);
            for _ in 0..passes.min(self.config.epochs - self.epochs_done) {
                self.final_loss = Some(self.fit_one_pass());
                self.epochs_done += 1;
            }
            return CalibrationProgress::Fitting { done: self.epochs_done, total: self.config.epochs };
        }
        if self.report.is_none() {
            self.finish();
        }
        CalibrationProgress::Finished
    }

    pub fn is_finished(&self) -> bool {
        self.report.is_some()
    }

    /// What the calibration did; `None` until it is finished.
    pub fn report(&self) -> Option<&CalibrationReport> {
        self.report.as_ref()
    }

    /// The model to use from now on: the calibrated one when the verdict accepted it, else the
    /// starting one (also until finished).
    pub fn network(&self) -> &Network {
        match (&self.calibrated, self.accepted()) {
            (Some(calibrated), true) => calibrated,
            _ => &self.start,
        }
    }

    pub fn into_network(self) -> Network {
        let accepted = self.accepted();
        match self.calibrated {
            Some(calibrated) if accepted => calibrated,
            _ => self.start,
        }
    }

    /// The calibrated model whatever the verdict (for measuring it); `None` until finished.
    pub fn calibrated_network(&self) -> Option<&Network> {
        self.calibrated.as_ref()
    }

    /// Whether the calibration finished and its verdict accepted the calibrated model.
    pub fn accepted(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.verdict.accepted)
    }

    /// Re-measures the batch-norm statistics on the fitted captures (as they are) and moves
    /// the model's part `adapt_batch_norm` of the way to them.
    fn adapt_batch_norm(&mut self) {
        self.adapted = true;
        let share = self.config.adapt_batch_norm;
        if share == 0.0 || !self.network.has_batch_norm() || self.fit_rows.is_empty() {
            return;
        }
        let is_statistic = |name: &str| name.ends_with(".running_mean") || name.ends_with(".running_var");
        let original: Vec<Tensor> =
            self.network.named_tensors().into_iter().filter(|(name, _)| is_statistic(name)).map(|(_, t)| t.clone()).collect();
        let rows = &self.fit_rows;
        let batches = rows.len().div_ceil(ADAPTATION_BATCH);
        let faces = &self.faces;
        let inputs = (0..batches).map(|b| {
            let batch = &rows[b * rows.len() / batches..(b + 1) * rows.len() / batches];
            let mut values = vec![0.0f32; batch.len() * FACE_PIXELS];
            for (&row, out) in batch.iter().zip(values.chunks_exact_mut(FACE_PIXELS)) {
                face_to_input(faces.face(row), out);
            }
            batch_tensor([1, 48, 48], values).expect("whole faces")
        });
        self.network.recalibrate_batch_norm(inputs);
        let adapted = self.network.named_tensors_mut().into_iter().filter(|(name, _)| is_statistic(name));
        for ((_, statistic), original) in adapted.zip(original) {
            statistic.zip_mut_with(&original, |measured, &was| *measured = was + share * (*measured - was));
        }
    }

    /// The next batch of jobs of one kind: scored by the starting model, or passed through
    /// the feature layers into their set.
    fn pass_faces(&mut self) {
        let scoring_before = matches!(self.jobs[self.next_job].group, Group::Before { .. });
        let same_kind = self.jobs[self.next_job..]
            .iter()
            .take(FEATURE_BATCH)
            .take_while(|job| matches!(job.group, Group::Before { .. }) == scoring_before)
            .count();
        let end = self.next_job + same_kind;
        let jobs = &self.jobs[self.next_job..end];
        let mut inputs = vec![0.0f32; jobs.len() * FACE_PIXELS];
        let (faces, config) = (&self.faces, &self.config);
        let first = self.next_job;
        map_sample_chunks(&mut inputs, FACE_PIXELS, |samples, out| {
            for (j, i) in samples.enumerate() {
                let job = &jobs[i];
                let out = &mut out[j * FACE_PIXELS..(j + 1) * FACE_PIXELS];
                if job.view == 0 {
                    face_to_input(faces.face(job.face), out);
                } else {
                    // One stream per job: the same views whatever the batching or threads.
                    let mut rng = Rng::seed_from_u64(derive_seed(config.seed, BATCH_STREAM, (first + i) as u64));
                    augment_face(faces.face(job.face), out, &config.augment, &mut rng);
                }
            }
        });
        let input = batch_tensor([1, 48, 48], inputs).expect("whole faces");
        if scoring_before {
            let probabilities = self.network.predict(input);
            for (job, p) in jobs.iter().zip(probabilities.axis_iter(Axis(0))) {
                let read = if job.group == (Group::Before { check: true }) { &mut self.before_check } else { &mut self.before_held_out };
                let mut values = [0.0; NUM_CLASSES];
                values.iter_mut().zip(p).for_each(|(v, &q)| *v = q);
                read.push(Prediction { label: self.faces.label(job.face), probabilities: values });
            }
            self.next_job = end;
            return;
        }
        let features = self.network.forward_prefix(input, self.head_start);
        let width = features.len() / jobs.len();
        for (job, values) in jobs.iter().zip(features.as_slice().expect("standard layout").chunks_exact(width)) {
            let set = match job.group {
                Group::Fit => &mut self.fit,
                Group::HeldOut => &mut self.held_out_set,
                Group::Replay => &mut self.replay,
                Group::Check | Group::Before { .. } => &mut self.check,
            };
            set.values.extend_from_slice(values);
            set.labels.push(self.faces.label(job.face));
        }
        self.next_job = end;
    }

    /// Every expression captured weighs the same in the fit however many captures it has, and
    /// the replayed rows together weigh `replay_weight` of the whole.
    fn weigh_fit_samples(&mut self) {
        self.fit_weighed = true;
        let mut counts = [0usize; NUM_CLASSES];
        self.fit.labels.iter().for_each(|&l| counts[usize::from(l)] += 1);
        let classes = counts.iter().filter(|&&c| c > 0).count().max(1) as f32;
        let capture_share = if self.replay.len() > 0 { 1.0 - self.config.replay_weight } else { 1.0 };
        self.fit.weights = self.fit.labels.iter().map(|&l| capture_share / (classes * counts[usize::from(l)] as f32)).collect();
        let replay_each = if self.replay.len() > 0 { self.config.replay_weight / self.replay.len() as f32 } else { 0.0 };
        self.replay.weights = vec![replay_each; self.replay.len()];
    }

    /// One pass over the fit's samples (captures' views and replayed rows) in seeded random
    /// batches; returns the mean loss.
    fn fit_one_pass(&mut self) -> f32 {
        let width = self.feature_width();
        let mut order: Vec<(bool, usize)> =
            (0..self.fit.len()).map(|i| (false, i)).chain((0..self.replay.len()).map(|i| (true, i))).collect();
        let mut rng = Rng::seed_from_u64(derive_seed(self.config.seed, SHUFFLE_STREAM, self.epochs_done as u64));
        order.shuffle(&mut rng);
        // Losses are means over a batch: weights scaled so that a pass's batches sum to each
        // sample's weight × the number of samples (the weights sum to 1 over all samples).
        let total = order.len() as f32;
        let mut loss_sum = 0.0f64;
        for batch in order.chunks(self.config.batch_size) {
            let mut values = Vec::with_capacity(batch.len() * width);
            let (mut labels, mut weights) = (Vec::with_capacity(batch.len()), Vec::with_capacity(batch.len()));
            for &(replayed, i) in batch {
                let set = if replayed { &self.replay } else { &self.fit };
                values.extend_from_slice(&set.values[i * width..(i + 1) * width]);
                labels.push(set.labels[i]);
                weights.push(set.weights[i] * total);
            }
            let input = Tensor::from_shape_vec(IxDyn(&[batch.len(), width, 1, 1]), values).expect("whole feature rows");
            let logits = self.head.forward(input, &mut Mode::Train(&mut rng));
            let targets = smoothed_one_hot(&labels, NUM_CLASSES, self.config.label_smoothing);
            // Weighted by `weights`, normalised by the batch size (not the weights' sum), so
            // that each sample counts by its weight across batches.
            let loss = softmax_cross_entropy(logits.view(), targets.view(), Some(&weights));
            let batch_weight: f32 = weights.iter().sum::<f32>() / batch.len() as f32;
            loss_sum += loss.loss as f64 * batch_weight as f64 * batch.len() as f64;
            self.head.zero_grad();
            self.head.backward(loss.grad_logits * batch_weight);
            let anchor = self.config.anchor;
            let mut params = self.head.params_mut();
            for (param, start) in params.iter_mut().zip(&self.head_start_values) {
                // d/dW of λ‖W − W₀‖²
                ndarray::Zip::from(&mut param.grad).and(&param.value).and(start).for_each(|g, &w, &s| *g += 2.0 * anchor * (w - s));
            }
            self.optimizer.step(&mut params, self.config.learning_rate);
        }
        (loss_sum / total as f64) as f32
    }

    fn feature_width(&self) -> usize {
        let n = self.fit.len() + self.held_out_set.len() + self.replay.len() + self.check.len();
        let values = self.fit.values.len() + self.held_out_set.values.len() + self.replay.values.len() + self.check.values.len();
        values / n.max(1)
    }

    /// Fits the gate, scores the calibrated model (personal weights where the gate says so,
    /// the model's own elsewhere), writes the fitted classifier into the personal weights and
    /// decides whether the calibrated model replaces the current one.
    fn finish(&mut self) {
        let bank = reference_appearance();
        let (bank_fit, bank_check): (Vec<_>, Vec<_>) = bank.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let bank_fit: Vec<_> = bank_fit.into_iter().map(|(_, s)| *s).collect();
        let bank_check: Vec<_> = bank_check.into_iter().map(|(_, s)| *s).collect();
        let gate = if self.config.gate { AppearanceGate::fit(&self.appearance_fit, &bank_fit) } else { AppearanceGate::everything() };
        let share_personal = |statistics: &[[f32; APPEARANCE_STATISTICS]]| {
            (!statistics.is_empty()).then(|| statistics.iter().filter(|s| gate.is_personal(s)).count() as f32 / statistics.len() as f32)
        };
        let reference_faces = ReferenceFaces { faces: bank_check.len(), read_personally: share_personal(&bank_check).unwrap_or(0.0) };
        let held_out_read_personally = share_personal(&self.appearance_held_out);

        let held_out_personal = predictions(&mut self.head, &std::mem::take(&mut self.held_out_set));
        let check_personal = predictions(&mut self.head, &std::mem::take(&mut self.check));
        let gated = |own: &[Prediction], personal: &[Prediction], statistics: &[[f32; APPEARANCE_STATISTICS]]| -> Vec<Prediction> {
            own.iter().zip(personal).zip(statistics).map(|((o, p), s)| if gate.is_personal(s) { *p } else { *o }).collect()
        };
        let held_out_after = gated(&self.before_held_out, &held_out_personal, &self.appearance_held_out);
        let check_after = gated(&self.before_check, &check_personal, &self.appearance_check);
        let held_out_accuracy = before_after(&self.before_held_out, &held_out_after);
        let reference_accuracy = before_after(&self.before_check, &check_after);
        let verdict = judge(&self.before_held_out, &held_out_after, &reference_faces, reference_accuracy.as_ref());

        let classifier_layers = self.network.spec().layers.len() - self.head_start;
        copy_layers(&self.head, 1, &mut self.network, self.head_start, classifier_layers);
        let mut calibrated = self.start.copy_without_personal();
        // The personal classifier was fitted anew: the model's temperature is not its own.
        let mut personal = self.network.copy_without_personal();
        personal.set_temperature(1.0).expect("1 is a temperature");
        calibrated.set_personal(Some(Personal { gate, network: personal }));
        self.calibrated = Some(calibrated);
        self.report = Some(CalibrationReport {
            fitted: self.fitted,
            held_out: self.held_out,
            held_out_accuracy,
            reference_accuracy,
            final_loss: self.final_loss,
            held_out_read_personally,
            reference_faces,
            verdict,
        });
    }
}

/// Whether the calibrated model replaces the current one: it must read the held-out captures
/// better by more than chance, and may read only a few of the reference faces differently.
fn judge(before: &[Prediction], after: &[Prediction], reference: &ReferenceFaces, check: Option<&BeforeAfter>) -> Verdict {
    let percent = |share: f32| format!("{:.1}%", share * 100.0);
    let reject = |reason: String| Verdict { accepted: false, reason };
    if before.is_empty() {
        return reject("no held-out captures to check the calibration on: capture at least two of each expression".into());
    }
    let wins = before.iter().zip(after).filter(|(b, a)| !b.is_right() && a.is_right()).count();
    let losses = before.iter().zip(after).filter(|(b, a)| b.is_right() && !a.is_right()).count();
    let (right_before, right_after) = (before.iter().filter(|p| p.is_right()).count(), after.iter().filter(|p| p.is_right()).count());
    let scores = format!("{} → {} of {} held-out captures", right_before, right_after, before.len());
    let margin = GAIN_Z * ((wins + losses) as f32).sqrt();
    if wins <= losses || ((wins - losses) as f32) < margin {
        return reject(format!(
            "calibrating does not read the held-out captures reliably better ({scores}: {wins} gained, {losses} lost); \
             the current model is kept"
        ));
    }
    if reference.read_personally > MOST_REFERENCE_FACES_READ_PERSONALLY {
        return reject(format!(
            "the captures look too much like ordinary faces: the calibrated weights would read {} of the reference faces, \
             more than {}; the current model is kept",
            percent(reference.read_personally),
            percent(MOST_REFERENCE_FACES_READ_PERSONALLY)
        ));
    }
    if let Some(check) = check {
        if check.after.accuracy < check.before.accuracy - MOST_CHECK_ACCURACY_LOST {
            return reject(format!(
                "calibrating costs too much on the FER2013 check faces ({} → {}); the current model is kept",
                percent(check.before.accuracy),
                percent(check.after.accuracy)
            ));
        }
    }
    Verdict {
        accepted: true,
        reason: format!(
            "{scores} ({wins} gained, {losses} lost); {} of the reference faces read by the calibrated weights",
            percent(reference.read_personally)
        ),
    }
}

fn before_after(before: &[Prediction], after: &[Prediction]) -> Option<BeforeAfter> {
    let evaluate = |predictions: &[Prediction]| {
        let mut tally = EvaluationTally::default();
        for p in predictions {
            tally.add([p.label], ndarray::ArrayView2::from_shape((1, NUM_CLASSES), &p.probabilities[..]).expect("one row"));
        }
        tally.finish()
    };
    (!before.is_empty()).then(|| BeforeAfter { before: evaluate(before), after: evaluate(after) })
}

/// A face's appearance statistics (`engine::personal`), as the network would read it.
fn face_appearance(face: &[u8]) -> [f32; APPEARANCE_STATISTICS] {
    let mut input = vec![0.0f32; FACE_PIXELS];
    face_to_input(face, &mut input);
    appearance_statistics(&input)
}

/// The appearance statistics of FER2013 Training faces, shipped with the library: the gate
/// learns ordinary faces from them, and they measure what a calibration risks on such faces.
/// Written by `cargo run --release --example reference_appearance` (f16, one face after another).
pub fn reference_appearance() -> Vec<[f32; APPEARANCE_STATISTICS]> {
    REFERENCE_APPEARANCE
        .chunks_exact(2 * APPEARANCE_STATISTICS)
        .map(|face| {
            let mut statistics = [0.0; APPEARANCE_STATISTICS];
            for (s, b) in statistics.iter_mut().zip(face.chunks_exact(2)) {
                *s = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
            statistics
        })
        .collect()
}

const REFERENCE_APPEARANCE: &[u8] = include_bytes!("reference_appearance.bin");

/// The current classifier's probabilities for a set's cached features.
fn predictions(head: &mut Network, set: &FeatureSet) -> Vec<Prediction> {
    if set.len() == 0 {
        return Vec::new();
    }
    let width = set.values.len() / set.len();
    let mut out = Vec::with_capacity(set.len());
    for (values, labels) in set.values.chunks(SCORE_BATCH * width).zip(set.labels.chunks(SCORE_BATCH)) {
        let input = Tensor::from_shape_vec(IxDyn(&[labels.len(), width, 1, 1]), values.to_vec()).expect("whole feature rows");
        for (&label, p) in labels.iter().zip(head.predict(input).axis_iter(Axis(0))) {
            let mut probabilities = [0.0; NUM_CLASSES];
            probabilities.iter_mut().zip(p).for_each(|(v, &q)| *v = q);
            out.push(Prediction { label, probabilities });
        }
    }
    out
}

/// The metadata of a calibrated model: the starting model's, less the accuracies measured on
/// it, with the calibration's report under `calibration`. The temperature and the uncertain
/// threshold stay: they belong to the model's own weights, which the calibration leaves as
/// they are (it adds a personal branch beside them).
pub fn calibrated_metadata(mut metadata: ModelMetadata, report: &CalibrationReport) -> ModelMetadata {
    let (temperature, uncertain_below) = (metadata.temperature, metadata.uncertain_below);
    metadata.forget_measurements();
    (metadata.temperature, metadata.uncertain_below) = (temperature, uncertain_below);
    let report = serde_json::to_string(report).expect("a report serialises");
    metadata.other.insert("calibration".into(), report);
    metadata
}

/// Runs a calibration to the end, calling `progress` after each step of it.
pub fn calibrate(
    network: Network,
    captures: &Dataset,
    reference: Option<ReferenceRows>,
    config: CalibrationConfig,
    mut progress: impl FnMut(CalibrationProgress),
) -> Result<(Network, CalibrationReport)> {
    let mut calibration = Calibration::new(network, captures, reference, config)?;
    loop {
        let step = calibration.advance();
        progress(step);
        if step == CalibrationProgress::Finished {
            break;
        }
    }
    let report = calibration.report().cloned().expect("a finished calibration has its report");
    Ok((calibration.into_network(), report))
}

/// The index of the classifier: the last dense layer, moved back over the dropout layers right
/// before it. Only a model that ends in that dense layer can be calibrated.
fn classifier_start(spec: &ModelSpec) -> Result<usize> {
    let layers = &spec.layers;
    let last_dense = layers.iter().rposition(|l| matches!(l, LayerSpec::Dense { .. }));
    match last_dense {
        Some(i) if i + 1 == layers.len() && i > 0 => {
            let mut start = i;
            while start > 1 && matches!(layers[start - 1], LayerSpec::Dropout { .. }) {
                start -= 1;
            }
            Ok(start)
        }
        _ => Err(FerError::Model(format!(
            "the model '{}' does not end in a dense layer after other layers, so it has no classifier to calibrate",
            spec.name
        ))),
    }
}

/// A network of the classifier alone, taking the features as `[width, 1, 1]`, with the
/// model's weights copied in.
fn head_network(network: &Network, head_start: usize) -> Result<Network> {
    let spec = network.spec();
    // The dense layer's weights are [units, inputs]; the dropout before it keeps the width.
    let dense = spec.layers.len() - 1;
    let width = network.layer_tensors(dense).into_iter().find(|(name, _)| *name == "weight").map(|(_, w)| w.shape()[1]);
    let width = width.ok_or_else(|| FerError::Model("the classifier has no weights".into()))?;
    let mut layers = vec![LayerSpec::Flatten];
    layers.extend_from_slice(&spec.layers[head_start..]);
    let head_spec = ModelSpec { name: format!("{} classifier", spec.name), input: [width, 1, 1], layers, classes: spec.classes };
    let mut head = Network::new(head_spec, 0)?;
    copy_layers(network, head_start, &mut head, 1, spec.layers.len() - head_start);
    Ok(head)
}

/// Copies the tensors of `count` layers of `source`, from layer `source_first` on, into the same
/// kind of layers of `target` from `target_first` on.
fn copy_layers(source: &Network, source_first: usize, target: &mut Network, target_first: usize, count: usize) {
    for offset in 0..count {
        let values = source.layer_tensors(source_first + offset).into_iter().map(|(_, t)| t.clone());
        for ((_, slot), value) in target.layer_tensors_mut(target_first + offset).into_iter().zip(values) {
            *slot = value;
        }
    }
}

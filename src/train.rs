//! Training and evaluation: the loop every front end shares (the CLI runs whole epochs, the
//! browser worker calls [`Trainer::train_step`] a few times per message so it can report).

use std::collections::HashMap;

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::data::input::{augment_face, face_to_input, AugmentConfig, Warp};
use crate::data::{Dataset, FACE_PIXELS, NUM_CLASSES};
use crate::engine::loss::{smoothed_one_hot, softmax_cross_entropy};
use crate::engine::network::batch_tensor;
use crate::engine::parallel::map_sample_chunks;
use crate::engine::{LrSchedule, Mode, Network, Optimizer, OptimizerKind, Rng, Tensor};
use crate::models::file::{load_with_extras, save_with_extras};
use crate::models::StoredDtype;
use crate::{FerError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Linear warm-up over `warmup_epochs`, then cosine decay to 1% of the rate at the last epoch.
    Cosine {
        warmup_epochs: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub optimizer: OptimizerKind,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub label_smoothing: f32,
    pub augment: Option<AugmentConfig>,
    /// Beta(α, α) mixing of pairs of faces and their targets; 0 turns mixup off.
    pub mixup_alpha: f32,
    /// Weight each sample by `1 / frequency` of its class (normalised to mean 1).
    pub class_weights: bool,
    pub seed: u64,
    /// Sharpness-aware minimisation's neighbourhood radius ρ; 0 turns it off (each step then
    /// costs one forward and backward pass instead of two).
    #[serde(default)]
    pub sam_rho: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            optimizer: OptimizerKind::adam(),
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            label_smoothing: 0.0,
            augment: None,
            mixup_alpha: 0.0,
            class_weights: false,
            seed: 1,
            sam_rho: 0.0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let problem = if self.epochs == 0 {
            Some("epochs must be at least 1".to_string())
        } else if self.batch_size == 0 {
            Some("batch size must be at least 1".into())
        } else if !(self.lr.is_finite() && self.lr > 0.0) {
            Some(format!("learning rate {} must be a positive number", self.lr))
        } else if !(0.0..1.0).contains(&self.label_smoothing) {
            Some(format!("label smoothing {} must be in [0, 1)", self.label_smoothing))
        } else if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            Some(format!("weight decay {} must be 0 or more", self.weight_decay))
        } else if !(self.mixup_alpha >= 0.0 && self.mixup_alpha.is_finite()) {
            Some(format!("mixup alpha {} must be 0 or more", self.mixup_alpha))
        } else if !(self.sam_rho >= 0.0 && self.sam_rho.is_finite()) {
            Some(format!("sharpness-aware radius {} must be 0 or more", self.sam_rho))
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(FerError::Config(p)))
    }
}

/// What one optimiser step did.
#[derive(Clone, Debug, Serialize)]
pub struct StepMetrics {
    pub loss: f32,
    /// Samples whose top prediction was their label (the dominant one under mixup).
    pub correct: usize,
    pub samples: usize,
    pub lr: f32,
    /// The epoch this step belonged to (0-based), and whether it finished it.
    pub epoch: usize,
    pub epoch_finished: bool,
}

/// Averages over an epoch's steps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EpochMetrics {
    pub loss: f32,
    pub accuracy: f32,
    pub samples: usize,
}

pub struct Trainer {
    pub network: Network,
    config: TrainConfig,
    optimizer: Optimizer,
    schedule: LrSchedule,
    /// Dataset rows trained on, and their order in the current epoch.
    train_rows: Vec<usize>,
    order: Vec<usize>,
    cursor: usize,
    epoch: usize,
    step: u64,
    class_weights: [f32; NUM_CLASSES],
    teacher: Option<Teacher>,
}

/// Knowledge distillation (Hinton et al. 2015): a teacher network's class probabilities for
/// every training face, measured once, blended into the training targets. A teacher measured
/// with test-time augmentation hands its averaged views to a single-pass student, and its soft
/// targets down-weight FER2013's mislabelled faces.
#[derive(Clone, Debug)]
pub struct Teacher {
    probabilities: HashMap<usize, [f32; NUM_CLASSES]>,
    /// Share of the target that is the teacher's: `(1 - w) · label + w · teacher`.
    weight: f32,
}

impl Teacher {
    /// Measures `network`'s probabilities (averaged over `tta`'s views of the clean face) for
    /// `rows` of `data`; `on_progress` gets the number of faces done so far.
    pub fn measure(
        network: &mut Network,
        data: &Dataset,
        rows: &[usize],
        tta: Tta,
        weight: f32,
        mut on_progress: impl FnMut(usize),
    ) -> Result<Teacher> {
        let mut probabilities = HashMap::with_capacity(rows.len());
        predict_rows(network, data, rows, tta, |chunk, probs| {
            for (&row, p) in chunk.iter().zip(probs.axis_iter(Axis(0))) {
                probabilities.insert(row, std::array::from_fn(|k| p[k]));
            }
            on_progress(probabilities.len());
        });
        Teacher::from_probabilities(probabilities, weight)
    }

    /// A teacher from known probabilities per dataset row; each must be a distribution.
    pub fn from_probabilities(probabilities: HashMap<usize, [f32; NUM_CLASSES]>, weight: f32) -> Result<Teacher> {
        if !(weight > 0.0 && weight <= 1.0) {
            return Err(FerError::Config(format!("distillation weight {weight} must be in (0, 1]")));
        }
        if let Some((row, _)) =
            probabilities.iter().find(|(_, p)| p.iter().any(|&q| !(0.0..=1.0).contains(&q)) || (p.iter().sum::<f32>() - 1.0).abs() > 1e-3)
        {
            return Err(FerError::Model(format!("the teacher's output for row {row} is not a probability distribution")));
        }
        Ok(Teacher { probabilities, weight })
    }

    pub fn weight(&self) -> f32 {
        self.weight
    }

    /// The teacher's probabilities for a dataset row, if it measured that row.
    pub fn probabilities(&self, row: usize) -> Option<&[f32; NUM_CLASSES]> {
        self.probabilities.get(&row)
    }

    /// Blends the teacher's probabilities for `rows` into `targets` (one row each).
    fn blend(&self, rows: &[usize], targets: &mut Array2<f32>) {
        for (&row, mut target) in rows.iter().zip(targets.axis_iter_mut(Axis(0))) {
            let teacher = &self.probabilities[&row];
            for (t, &p) in target.iter_mut().zip(teacher) {
                *t = (1.0 - self.weight) * *t + self.weight * p;
            }
        }
    }
}

/// Mixes `seed` with a counter into an independent stream seed (SplitMix64's finaliser).
fn derive_seed(seed: u64, stream: u64, counter: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ counter.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SHUFFLE_STREAM: u64 = 1;
const BATCH_STREAM: u64 = 2;
const RECALIBRATION_STREAM: u64 = 3;

/// Training faces whose batch-norm statistics [`Trainer::recalibrate_batch_norm`] measures
/// after each epoch: 32 batches of 256 give steady means, and cost about a tenth of an epoch
/// of FER2013 (a forward pass is about a third of a training step).
pub const RECALIBRATION_FACES: usize = 8192;
/// Faces per forward pass when recalibrating: large batches give steady batch statistics.
const RECALIBRATION_BATCH: usize = 256;

impl Trainer {
    /// Prepares to train `network` on `train_rows` of `data`.
    pub fn new(network: Network, config: TrainConfig, data: &Dataset, train_rows: Vec<usize>) -> Result<Trainer> {
        config.validate()?;
        if train_rows.is_empty() {
            return Err(FerError::Data("no training rows: the file has no 'Training' faces".into()));
        }
        if let Some(&bad) = train_rows.iter().find(|&&r| r >= data.len()) {
            return Err(FerError::Data(format!("training row {bad} is past the end of the data ({} rows)", data.len())));
        }
        let counts = data.class_counts(&train_rows);
        let class_weights = if config.class_weights { inverse_frequency_weights(&counts) } else { [1.0; NUM_CLASSES] };
        let steps_per_epoch = train_rows.len().div_ceil(config.batch_size) as u64;
        let schedule = match config.schedule {
            Schedule::Constant => LrSchedule::Constant,
            Schedule::Cosine { warmup_epochs } => LrSchedule::Cosine {
                warmup_steps: warmup_epochs as u64 * steps_per_epoch,
                total_steps: config.epochs as u64 * steps_per_epoch,
                min_ratio: 0.01,
            },
        };
        let optimizer = Optimizer::new(config.optimizer, config.weight_decay);
        let mut trainer = Trainer {
            network,
            config,
            optimizer,
            schedule,
            train_rows,
            order: Vec::new(),
            cursor: 0,
            epoch: 0,
            step: 0,
            class_weights,
            teacher: None,
        };
        trainer.shuffle();
        Ok(trainer)
    }

    /// Trains towards `teacher`'s probabilities as well as the labels from now on; it must
    /// cover every training row.
    pub fn distil_from(mut self, teacher: Teacher) -> Result<Trainer> {
        if let Some(row) = self.train_rows.iter().find(|r| !teacher.probabilities.contains_key(r)) {
            return Err(FerError::Config(format!("the teacher has no probabilities for training row {row}")));
        }
        self.teacher = Some(teacher);
        Ok(self)
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_rows.len().div_ceil(self.config.batch_size)
    }

    pub fn is_finished(&self) -> bool {
        self.epoch >= self.config.epochs
    }

    fn shuffle(&mut self) {
        self.order = self.train_rows.clone();
        let mut rng = Rng::seed_from_u64(derive_seed(self.config.seed, SHUFFLE_STREAM, self.epoch as u64));
        self.order.shuffle(&mut rng);
        self.cursor = 0;
    }

    /// Trains on the next batch of the current epoch; the epoch's last batch may be smaller.
    pub fn train_step(&mut self, data: &Dataset) -> StepMetrics {
        let end = (self.cursor + self.config.batch_size).min(self.order.len());
        let rows = self.order[self.cursor..end].to_vec();
        let mut rng = Rng::seed_from_u64(derive_seed(self.config.seed, BATCH_STREAM, self.step));
        let batch_seed = rng.random::<u64>();
        let mut inputs = training_inputs(data, &rows, self.config.augment.as_ref(), batch_seed);
        let labels: Vec<u8> = rows.iter().map(|&r| data.label(r)).collect();
        let mut targets = smoothed_one_hot(&labels, NUM_CLASSES, self.config.label_smoothing);
        if let Some(teacher) = &self.teacher {
            teacher.blend(&rows, &mut targets);
        }
        let mut weights: Vec<f32> = labels.iter().map(|&l| self.class_weights[l as usize]).collect();
        if self.config.mixup_alpha > 0.0 && rows.len() > 1 {
            mixup(&mut inputs, &mut targets, &mut weights, self.config.mixup_alpha, &mut rng);
        }
        let input = batch_tensor([1, 48, 48], inputs).expect("whole faces");
        let sam_input = (self.config.sam_rho > 0.0).then(|| input.clone());
        let logits = self.network.forward(input, &mut Mode::Train(&mut rng));
        let out = softmax_cross_entropy(logits.view(), targets.view(), Some(&weights));
        let correct = count_correct(&out.probs, &targets);
        self.network.zero_grad();
        self.network.backward(out.grad_logits);
        if let Some(input) = sam_input {
            self.take_sharpness_aware_gradient(input, &targets, &weights, &mut rng);
        }
        let lr = self.schedule.lr_at(self.config.lr, self.step);
        self.optimizer.step(&mut self.network.params_mut(), lr);
        self.step += 1;

        let epoch = self.epoch;
        self.cursor = end;
        let epoch_finished = self.cursor >= self.order.len();
        if epoch_finished {
            self.epoch += 1;
            self.shuffle();
        }
        StepMetrics { loss: out.loss, correct, samples: rows.len(), lr, epoch, epoch_finished }
    }

    /// Sharpness-aware minimisation (Foret et al. 2021): replaces the gradient at the weights w
    /// with the one at w + ρ·g/‖g‖, the worst point of the ρ-ball to first order, so that steps
    /// lead to minima whose whole neighbourhood has a low loss. The weights are restored before
    /// the optimiser step. Batch-norm statistics also see the second pass; they are re-measured
    /// after each epoch anyway.
    fn take_sharpness_aware_gradient(&mut self, input: Tensor, targets: &Array2<f32>, weights: &[f32], rng: &mut Rng) {
        let squared_norm: f64 = self.network.params().iter().flat_map(|p| p.grad.iter()).map(|&g| (g as f64) * (g as f64)).sum();
        let norm = squared_norm.sqrt() as f32;
        if !(norm.is_finite() && norm > 0.0) {
            return;
        }
        let scale = self.config.sam_rho / norm;
        let perturbations: Vec<Tensor> = self.network.params().iter().map(|p| &p.grad * scale).collect();
        for (param, perturbation) in self.network.params_mut().into_iter().zip(&perturbations) {
            param.value += perturbation;
        }
        let logits = self.network.forward(input, &mut Mode::Train(rng));
        let out = softmax_cross_entropy(logits.view(), targets.view(), Some(weights));
        self.network.zero_grad();
        self.network.backward(out.grad_logits);
        for (param, perturbation) in self.network.params_mut().into_iter().zip(&perturbations) {
            param.value -= perturbation;
        }
    }

    /// Runs the rest of the current epoch, calling `on_step` after every batch.
    pub fn train_epoch(&mut self, data: &Dataset, mut on_step: impl FnMut(&StepMetrics)) -> EpochMetrics {
        let (mut loss_sum, mut correct, mut samples) = (0.0f64, 0usize, 0usize);
        loop {
            let step = self.train_step(data);
            loss_sum += step.loss as f64 * step.samples as f64;
            correct += step.correct;
            samples += step.samples;
            on_step(&step);
            if step.epoch_finished {
                break;
            }
        }
        EpochMetrics { loss: (loss_sum / samples.max(1) as f64) as f32, accuracy: correct as f32 / samples.max(1) as f32, samples }
    }

    /// How many faces [`Trainer::recalibrate_batch_norm`] will use: 0 when the network has no
    /// batch-norm layer.
    pub fn recalibration_faces(&self) -> usize {
        if self.network.has_batch_norm() {
            self.train_rows.len().min(RECALIBRATION_FACES)
        } else {
            0
        }
    }

    /// [`recalibrate_batch_norm`] on [`Trainer::recalibration_faces`] training rows, a fresh
    /// random draw each epoch. The front ends call it after every epoch, before evaluating or
    /// saving; training itself never reads the running statistics.
    pub fn recalibrate_batch_norm(&mut self, data: &Dataset) {
        let count = self.recalibration_faces();
        if count == 0 {
            return;
        }
        let mut rows = self.train_rows.clone();
        let mut rng = Rng::seed_from_u64(derive_seed(self.config.seed, RECALIBRATION_STREAM, self.epoch as u64));
        let (chosen, _) = rows.partial_shuffle(&mut rng, count);
        recalibrate_batch_norm(&mut self.network, data, chosen);
    }

    /// Everything needed to continue exactly where training stopped (at any step): the model,
    /// optimiser state and position, as a safetensors file. The trained rows are not stored:
    /// resuming must pass the same ones.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let (first, second) = self.optimizer.state();
        let mut extras: Vec<(String, &Tensor)> = Vec::new();
        extras.extend(first.iter().enumerate().map(|(i, t)| (format!("optimizer.first.{i}"), t)));
        extras.extend(second.iter().enumerate().map(|(i, t)| (format!("optimizer.second.{i}"), t)));
        let state = CheckpointState {
            config: self.config.clone(),
            epoch: self.epoch,
            step: self.step,
            cursor: self.cursor,
            optimizer_steps: self.optimizer.steps,
            train_rows: self.train_rows.len(),
            distillation_weight: self.teacher.as_ref().map(Teacher::weight),
        };
        let metadata =
            HashMap::from([("checkpoint".to_string(), serde_json::to_string(&state).map_err(|e| FerError::Model(e.to_string()))?)]);
        save_with_extras(&self.network, StoredDtype::F32, &metadata, &extras)
    }

    /// Continues from [`Trainer::checkpoint`] bytes. `epochs`, when given, replaces the
    /// configured number (to extend a finished run; the schedule stretches accordingly). A run
    /// that distilled must be given its teacher again (teachers are not stored).
    pub fn resume(
        bytes: &[u8],
        data: &Dataset,
        train_rows: Vec<usize>,
        epochs: Option<usize>,
        teacher: Option<Teacher>,
    ) -> Result<Trainer> {
        let (loaded, extras) = load_with_extras(bytes)?;
        let state_json = loaded
            .metadata
            .get("checkpoint")
            .ok_or_else(|| FerError::Model("this model file is not a training checkpoint (no 'checkpoint' metadata)".into()))?;
        let state: CheckpointState =
            serde_json::from_str(state_json).map_err(|e| FerError::Model(format!("invalid checkpoint state: {e}")))?;
        if state.train_rows != train_rows.len() {
            return Err(FerError::Config(format!(
                "the checkpoint trained on {} rows, this run selects {}: use the same --csv and --limit",
                state.train_rows,
                train_rows.len()
            )));
        }
        match (state.distillation_weight, &teacher) {
            (Some(weight), None) => {
                return Err(FerError::Config(format!(
                    "the checkpoint distilled from a teacher (weight {weight}): pass the same teacher again"
                )))
            }
            (None, Some(_)) => return Err(FerError::Config("the checkpoint did not distil from a teacher: resume without one".into())),
            _ => {}
        }
        let mut config = state.config;
        if let Some(epochs) = epochs {
            config.epochs = epochs;
        }
        let mut trainer = Trainer::new(loaded.network, config, data, train_rows)?;
        if let Some(teacher) = teacher {
            trainer = trainer.distil_from(teacher)?;
        }
        let take = |prefix: &str| -> Vec<Tensor> {
            let mut tensors: Vec<(usize, Tensor)> = extras
                .iter()
                .filter_map(|(name, t)| name.strip_prefix(prefix).and_then(|i| i.parse().ok()).map(|i: usize| (i, t.clone())))
                .collect();
            tensors.sort_by_key(|(i, _)| *i);
            tensors.into_iter().map(|(_, t)| t).collect()
        };
        trainer.optimizer.set_state(take("optimizer.first."), take("optimizer.second."), state.optimizer_steps);
        trainer.epoch = state.epoch;
        trainer.step = state.step;
        trainer.shuffle();
        trainer.cursor = state.cursor.min(trainer.order.len());
        Ok(trainer)
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    epoch: usize,
    step: u64,
    cursor: usize,
    optimizer_steps: u64,
    train_rows: usize,
    /// Absent in checkpoints written before distillation existed.
    #[serde(default)]
    distillation_weight: Option<f32>,
}

/// `1 / count` per class, scaled so the average weight over the training samples is 1.
fn inverse_frequency_weights(counts: &[usize; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
    let total: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let mut weights = [0.0; NUM_CLASSES];
    for (w, &c) in weights.iter_mut().zip(counts) {
        if c > 0 {
            *w = total as f32 / (present as f32 * c as f32);
        }
    }
    weights
}

/// Inputs for `rows`, augmented when `augment` is set; each face gets its own random stream
/// (derived from `batch_seed` and its position), so the result does not depend on threads.
fn training_inputs(data: &Dataset, rows: &[usize], augment: Option<&AugmentConfig>, batch_seed: u64) -> Vec<f32> {
    let mut inputs = vec![0.0f32; rows.len() * FACE_PIXELS];
    map_sample_chunks(&mut inputs, FACE_PIXELS, |samples, out| {
        for (j, i) in samples.enumerate() {
            let face = data.face(rows[i]);
            let out = &mut out[j * FACE_PIXELS..(j + 1) * FACE_PIXELS];
            match augment {
                Some(config) => augment_face(face, out, config, &mut Rng::seed_from_u64(derive_seed(batch_seed, 0, i as u64))),
                None => face_to_input(face, out),
            }
        }
    });
    inputs
}

/// "Precise batch-norm" (Wu & Johnson 2021): makes every batch-norm layer's running statistics
/// the mean of its batch statistics over `rows` as they look at test time (no augmentation), in
/// batches of about [`RECALIBRATION_BATCH`]. Training leaves an exponential average dominated
/// by its last few augmented batches of 64, which measurably misses the clean faces' statistics.
pub fn recalibrate_batch_norm(network: &mut Network, data: &Dataset, rows: &[usize]) {
    // Nearly equal batches (sizes differ by at most one face), as each batch weighs the same.
    let batches = rows.len().div_ceil(RECALIBRATION_BATCH);
    let inputs = (0..batches).map(|b| {
        let batch_rows = &rows[b * rows.len() / batches..(b + 1) * rows.len() / batches];
        batch_tensor([1, 48, 48], training_inputs(data, batch_rows, None, 0)).expect("whole faces")
    });
    network.recalibrate_batch_norm(inputs);
}

/// Mixup (Zhang et al. 2018): each sample blends with a shuffled partner by one λ ~ Beta(α, α).
fn mixup(inputs: &mut [f32], targets: &mut Array2<f32>, weights: &mut [f32], alpha: f32, rng: &mut Rng) {
    let lambda = Beta::new(alpha, alpha).map(|b| b.sample(rng)).unwrap_or(1.0);
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

fn argmax(values: ndarray::ArrayView1<f32>) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

fn count_correct(probs: &Array2<f32>, targets: &Array2<f32>) -> usize {
    probs.axis_iter(Axis(0)).zip(targets.axis_iter(Axis(0))).filter(|(p, t)| argmax(p.view()) == argmax(t.view())).count()
}

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

/// Class probabilities `[n, 7]` for faces laid end to end (`n × 2304` bytes), averaged over
/// the test-time views.
pub fn predict_faces(network: &mut Network, faces_u8: &[u8], tta: Tta) -> Array2<f32> {
    let n = faces_u8.len() / FACE_PIXELS;
    let warps = tta.warps();
    let mut probs = Array2::<f32>::zeros((n, NUM_CLASSES));
    for warp in &warps {
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
        probs += &network.predict(batch_tensor([1, 48, 48], inputs).expect("whole faces"));
    }
    probs / warps.len() as f32
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
}

/// Rows evaluated per forward pass: bounds memory (activations of the largest preset).
const EVAL_BATCH: usize = 256;

/// [`predict_faces`] over `rows` of `data`, [`EVAL_BATCH`] rows at a time: `visit` gets each
/// chunk of rows and their probabilities.
fn predict_rows(network: &mut Network, data: &Dataset, rows: &[usize], tta: Tta, mut visit: impl FnMut(&[usize], Array2<f32>)) {
    for chunk in rows.chunks(EVAL_BATCH) {
        let faces: Vec<u8> = chunk.iter().flat_map(|&r| data.face(r).iter().copied()).collect();
        visit(chunk, predict_faces(network, &faces, tta));
    }
}

pub fn evaluate(network: &mut Network, data: &Dataset, rows: &[usize], tta: Tta) -> Evaluation {
    let mut confusion = [[0usize; NUM_CLASSES]; NUM_CLASSES];
    let mut loss = 0.0f64;
    predict_rows(network, data, rows, tta, |chunk, probs| {
        for (&row, p) in chunk.iter().zip(probs.axis_iter(Axis(0))) {
            let label = data.label(row) as usize;
            confusion[label][argmax(p)] += 1;
            loss -= (p[label].max(1e-30) as f64).ln();
        }
    });
    evaluation_from_confusion(confusion, loss / rows.len().max(1) as f64)
}

fn evaluation_from_confusion(confusion: [[usize; NUM_CLASSES]; NUM_CLASSES], loss: f64) -> Evaluation {
    let n: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..NUM_CLASSES).map(|k| confusion[k][k]).sum();
    let mut per_class = [0.0; NUM_CLASSES];
    for (k, acc) in per_class.iter_mut().enumerate() {
        let total: usize = confusion[k].iter().sum();
        *acc = if total > 0 { confusion[k][k] as f32 / total as f32 } else { 0.0 };
    }
    Evaluation { accuracy: correct as f32 / n.max(1) as f32, n, per_class, confusion, loss: loss as f32 }
}

//! One optimiser step after another over the training rows, epoch by epoch: batches drawn in a
//! seeded order, inputs augmented, targets smoothed (and blended with a teacher's), the loss,
//! the backward pass and the update. Every random draw comes from a stream derived from the
//! seed and the step, so a run resumed from a checkpoint continues exactly.

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use serde::Serialize;

use super::config::TrainConfig;
use super::distil::Teacher;
use super::mixup::mixup;
use super::sam::take_sharpness_aware_gradient;
use super::{derive_seed, BATCH_STREAM, SHUFFLE_STREAM};
use crate::data::input::{augment_face, face_to_input, AugmentConfig};
use crate::data::{Dataset, FACE_PIXELS, NUM_CLASSES};
use crate::engine::loss::{smoothed_one_hot, softmax_cross_entropy};
use crate::engine::network::batch_tensor;
use crate::engine::parallel::map_sample_chunks;
use crate::engine::{LrSchedule, Mode, Network, Optimizer, Rng};
use crate::inference::argmax;
use crate::{FerError, Result};

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

pub struct Trainer {
    pub network: Network,
    pub(super) config: TrainConfig,
    pub(super) optimizer: Optimizer,
    schedule: LrSchedule,
    /// Dataset rows trained on, and their order in the current epoch.
    pub(super) train_rows: Vec<usize>,
    pub(super) order: Vec<usize>,
    pub(super) cursor: usize,
    pub(super) epoch: usize,
    pub(super) step: u64,
    class_weights: [f32; NUM_CLASSES],
    pub(super) teacher: Option<Teacher>,
}

impl Trainer {
    /// Prepares to train `network` on `train_rows` of `data`.
    pub fn new(mut network: Network, config: TrainConfig, data: &Dataset, train_rows: Vec<usize>) -> Result<Trainer> {
        config.validate()?;
        // A starting model's temperature was fitted to its weights, not to those trained here.
        network.set_temperature(1.0)?;
        if train_rows.is_empty() {
            return Err(FerError::Data("no training rows: the file has no 'Training' faces".into()));
        }
        if let Some(&bad) = train_rows.iter().find(|&&r| r >= data.len()) {
            return Err(FerError::Data(format!("training row {bad} is past the end of the data ({} rows)", data.len())));
        }
        let counts = data.class_counts(&train_rows);
        let class_weights = if config.class_weights { inverse_frequency_weights(&counts) } else { [1.0; NUM_CLASSES] };
        let schedule = config.schedule.over_steps(config.epochs, train_rows.len().div_ceil(config.batch_size));
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
        if let Some(row) = self.train_rows.iter().find(|&&r| teacher.probabilities(r).is_none()) {
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

    /// Steps taken in the current epoch.
    pub fn step_in_epoch(&self) -> usize {
        self.cursor.div_ceil(self.config.batch_size)
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_rows.len().div_ceil(self.config.batch_size)
    }

    /// Optimiser steps taken since the run began.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    pub fn train_rows(&self) -> &[usize] {
        &self.train_rows
    }

    pub fn is_finished(&self) -> bool {
        self.epoch >= self.config.epochs
    }

    pub(super) fn shuffle(&mut self) {
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
            take_sharpness_aware_gradient(&mut self.network, self.config.sam_rho, input, &targets, &weights, &mut rng);
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
pub(super) fn training_inputs(data: &Dataset, rows: &[usize], augment: Option<&AugmentConfig>, batch_seed: u64) -> Vec<f32> {
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

fn count_correct(probs: &Array2<f32>, targets: &Array2<f32>) -> usize {
    probs.axis_iter(Axis(0)).zip(targets.axis_iter(Axis(0))).filter(|(p, t)| argmax(p.view()) == argmax(t.view())).count()
}

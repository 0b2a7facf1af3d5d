//! The training run every front end drives: `fer train` prints what it returns, the page's
//! training worker posts it. A run trains in slices of steps (so a front end can report, pause
//! or stop between them), ends each epoch the same way everywhere (batch-norm statistics
//! re-measured, PublicTest evaluated), writes checkpoints, and exports the model at a chosen
//! precision with its metadata.

use serde::Serialize;

use super::batch_norm::{recalibrate_batch_norm, recalibration_rows};
use super::config::TrainConfig;
use super::distil::Teacher;
use super::trainer::Trainer;
use crate::data::{Dataset, Usage};
use crate::engine::{Network, Tensor};
use crate::inference::{evaluate, Evaluation, Tta};
use crate::models::{as_stored, save_model, ModelMetadata, StoredDtype};
use crate::Result;

/// The rows a run trains on: the file's Training rows in file order, the first `limit` of them
/// when given (the paper trained on the first 6,000).
pub fn training_rows(data: &Dataset, limit: Option<usize>) -> Vec<usize> {
    let mut rows = data.indices_of(Usage::Training);
    if let Some(limit) = limit {
        rows.truncate(limit);
    }
    rows
}

/// What the steps of one slice did, summed over them.
#[derive(Clone, Debug, Serialize)]
pub struct SliceReport {
    /// Mean loss and correct predictions over the slice's samples (augmented, in training mode).
    pub loss: f32,
    pub correct: usize,
    pub samples: usize,
    pub steps: usize,
    /// The learning rate of the slice's last step.
    pub lr: f32,
    /// Epochs completed, and epochs trained counting the current one's share of steps.
    pub epochs_completed: usize,
    pub epochs_trained: f32,
    /// The slice ended an epoch: call [`TrainingRun::end_epoch`] next.
    pub epoch_finished: bool,
    pub finished: bool,
    /// The run stopped because the loss or the weights stopped being numbers.
    pub diverged: Option<Divergence>,
}

/// A loss or weights that became NaN or infinite: the run stops at that step with the last
/// good weights restored, and says what to try.
#[derive(Clone, Debug, Serialize)]
pub struct Divergence {
    /// The optimiser step (counted from 1) and the epoch (from 1) it happened in.
    pub step: u64,
    pub epoch: usize,
    /// Epochs completed by the weights restored (0: the weights the run started from).
    pub restored_epoch: usize,
    /// What happened and what to try, for the user.
    pub message: String,
}

/// The training figures of a finished epoch: means over its (augmented) batches.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EpochTotals {
    pub loss: f32,
    pub accuracy: f32,
    pub samples: usize,
}

/// What the end of an epoch measured.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    /// Epochs completed.
    pub epoch: usize,
    pub train: EpochTotals,
    /// Training faces the batch-norm statistics were measured on (0 without batch-norm).
    pub recalibrated_on: usize,
    /// The current weights on the PublicTest rows, if the data has any.
    pub public_test: Option<Evaluation>,
}

/// A model file written by [`TrainingRun::export`], and its PublicTest evaluation as stored.
pub struct Export {
    pub bytes: Vec<u8>,
    pub network: Network,
    pub public_test: Option<Evaluation>,
}

#[derive(Default)]
struct Sums {
    loss: f64,
    correct: usize,
    samples: usize,
}

impl Sums {
    fn add(&mut self, loss: f32, correct: usize, samples: usize) {
        self.loss += loss as f64 * samples as f64;
        self.correct += correct;
        self.samples += samples;
    }

    fn totals(&self) -> EpochTotals {
        let samples = self.samples.max(1) as f64;
        EpochTotals { loss: (self.loss / samples) as f32, accuracy: (self.correct as f64 / samples) as f32, samples: self.samples }
    }
}

pub struct TrainingRun {
    trainer: Trainer,
    /// PublicTest rows, evaluated after every epoch over `tta`'s views.
    test_rows: Vec<usize>,
    tta: Tta,
    epoch_sums: Sums,
    /// The latest evaluation of each test usage, and whether the weights changed since.
    evaluations: Vec<(Usage, Evaluation)>,
    trained_since_evaluation: bool,
    teacher_description: Option<String>,
    /// The weights (and batch-norm statistics) at the last epoch's end, or at the start.
    last_good: LastGood,
    diverged: Option<Divergence>,
}

struct LastGood {
    epoch: usize,
    tensors: Vec<Tensor>,
}

impl LastGood {
    fn of(network: &Network, epoch: usize) -> LastGood {
        LastGood { epoch, tensors: network.named_tensors().into_iter().map(|(_, t)| t.clone()).collect() }
    }
}

impl TrainingRun {
    /// A run training `network` on [`training_rows`]`(data, limit)`.
    pub fn new(network: Network, config: TrainConfig, data: &Dataset, limit: Option<usize>, tta: Tta) -> Result<TrainingRun> {
        let trainer = Trainer::new(network, config, data, training_rows(data, limit))?;
        Ok(TrainingRun::around(trainer, data, tta))
    }

    /// Continues from [`TrainingRun::checkpoint`] bytes, on the same rows (`limit`); `epochs`
    /// extends a run, and a run that distilled needs its teacher again.
    pub fn resume(
        checkpoint: &[u8],
        data: &Dataset,
        limit: Option<usize>,
        tta: Tta,
        epochs: Option<usize>,
        teacher: Option<(Teacher, String)>,
    ) -> Result<TrainingRun> {
        let (teacher, description) = teacher.unzip();
        let trainer = Trainer::resume(checkpoint, data, training_rows(data, limit), epochs, teacher)?;
        let mut run = TrainingRun::around(trainer, data, tta);
        run.teacher_description = description;
        Ok(run)
    }

    fn around(trainer: Trainer, data: &Dataset, tta: Tta) -> TrainingRun {
        TrainingRun {
            last_good: LastGood::of(&trainer.network, trainer.epoch()),
            diverged: None,
            trainer,
            test_rows: data.indices_of(Usage::PublicTest),
            tta,
            epoch_sums: Sums::default(),
            evaluations: Vec::new(),
            trained_since_evaluation: true,
            teacher_description: None,
        }
    }

    /// Trains towards `teacher`'s probabilities too; `description` names it in the model's
    /// metadata.
    pub fn distil_from(mut self, teacher: Teacher, description: String) -> Result<TrainingRun> {
        self.trainer = self.trainer.distil_from(teacher)?;
        self.teacher_description = Some(description);
        Ok(self)
    }

    pub fn network(&self) -> &Network {
        &self.trainer.network
    }

    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.trainer.network
    }

    pub fn config(&self) -> &TrainConfig {
        self.trainer.config()
    }

    pub fn epochs_completed(&self) -> usize {
        self.trainer.epoch()
    }

    /// Every epoch trained, or stopped by a divergence.
    pub fn is_finished(&self) -> bool {
        self.trainer.is_finished() || self.diverged.is_some()
    }

    pub fn divergence(&self) -> Option<&Divergence> {
        self.diverged.as_ref()
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.trainer.steps_per_epoch()
    }

    pub fn train_rows(&self) -> &[usize] {
        self.trainer.train_rows()
    }

    pub fn test_rows(&self) -> &[usize] {
        &self.test_rows
    }

    /// The faces [`TrainingRun::end_epoch`] passes forward: recalibration and evaluation.
    pub fn epoch_end_faces(&self) -> usize {
        self.recalibration_rows().len() + self.test_rows.len() * self.tta.views()
    }

    fn recalibration_rows(&self) -> Vec<usize> {
        recalibration_rows(self.network(), self.train_rows(), self.config().seed, self.epochs_completed())
    }

    /// Up to `max_steps` optimiser steps, stopping early at the end of an epoch.
    pub fn train_slice(&mut self, data: &Dataset, max_steps: usize) -> SliceReport {
        let mut slice = Sums::default();
        let (mut steps, mut lr, mut epoch_finished) = (0, 0.0, false);
        while steps < max_steps && !self.is_finished() {
            let step = self.trainer.train_step(data);
            let what = if !step.loss.is_finite() {
                Some("the loss")
            } else if !self.network().params().iter().all(|p| p.value.iter().all(|v| v.is_finite())) {
                Some("the weights")
            } else {
                None
            };
            if let Some(what) = what {
                self.stop_diverged(what, step.epoch + 1);
                break;
            }
            slice.add(step.loss, step.correct, step.samples);
            self.epoch_sums.add(step.loss, step.correct, step.samples);
            steps += 1;
            lr = step.lr;
            if step.epoch_finished {
                epoch_finished = true;
                break;
            }
        }
        self.trained_since_evaluation |= steps > 0;
        let totals = slice.totals();
        SliceReport {
            loss: totals.loss,
            correct: slice.correct,
            samples: slice.samples,
            steps,
            lr,
            epochs_completed: self.epochs_completed(),
            epochs_trained: self.epochs_completed() as f32 + self.trainer.step_in_epoch() as f32 / self.steps_per_epoch() as f32,
            epoch_finished,
            finished: self.is_finished(),
            diverged: self.diverged.clone(),
        }
    }

    /// Restores the last good weights and records why the run stopped.
    fn stop_diverged(&mut self, what: &str, epoch: usize) {
        for ((_, tensor), good) in self.trainer.network.named_tensors_mut().into_iter().zip(&self.last_good.tensors) {
            tensor.assign(good);
        }
        self.epoch_sums = Sums::default();
        self.trained_since_evaluation = self.last_good.epoch != self.epochs_completed();
        let restored = match self.last_good.epoch {
            0 => "the weights it started from are restored".to_string(),
            n => format!("the weights after epoch {n} are restored"),
        };
        self.diverged = Some(Divergence {
            step: self.trainer.steps_taken(),
            epoch,
            restored_epoch: self.last_good.epoch,
            message: format!(
                "training diverged at step {} (epoch {epoch}): {what} became NaN or infinite, and {restored}. \
                 Try a learning rate ten times lower ({} instead of {}).",
                self.trainer.steps_taken(),
                self.config().lr / 10.0,
                self.config().lr
            ),
        });
    }

    /// The end of an epoch: batch-norm statistics re-measured on clean training faces (the
    /// running averages training leaves are not used), then PublicTest evaluated. Also called
    /// when a run stops mid-epoch, so the model it leaves has measured statistics.
    pub fn end_epoch(&mut self, data: &Dataset) -> EpochReport {
        let rows = self.recalibration_rows();
        recalibrate_batch_norm(&mut self.trainer.network, data, &rows);
        let public_test = self.evaluate(data, Usage::PublicTest);
        let train = std::mem::take(&mut self.epoch_sums).totals();
        if self.diverged.is_none() {
            self.last_good = LastGood::of(self.network(), self.epochs_completed());
        }
        EpochReport { epoch: self.epochs_completed(), train, recalibrated_on: rows.len(), public_test }
    }

    /// The current weights on the rows of `usage` (none when the data has none), recorded for
    /// the model's metadata.
    pub fn evaluate(&mut self, data: &Dataset, usage: Usage) -> Option<Evaluation> {
        let rows = if usage == Usage::PublicTest { self.test_rows.clone() } else { data.indices_of(usage) };
        if rows.is_empty() {
            return None;
        }
        if self.trained_since_evaluation {
            self.evaluations.clear();
            self.trained_since_evaluation = false;
        }
        let evaluation = evaluate(&mut self.trainer.network, data, &rows, self.tta);
        self.evaluations.retain(|(u, _)| *u != usage);
        self.evaluations.push((usage, evaluation.clone()));
        Some(evaluation)
    }

    fn evaluation(&self, usage: Usage) -> Option<&Evaluation> {
        self.evaluations.iter().find(|(u, _)| *u == usage).map(|(_, e)| e)
    }

    /// What the model file records about this run.
    pub fn metadata(&self) -> ModelMetadata {
        let current = |usage| if self.trained_since_evaluation { None } else { self.evaluation(usage).map(|e| e.accuracy) };
        ModelMetadata {
            training: serde_json::to_value(self.config()).ok(),
            train_rows: Some(self.train_rows().len()),
            epochs_completed: Some(self.epochs_completed()),
            publictest_accuracy: current(Usage::PublicTest),
            privatetest_accuracy: current(Usage::PrivateTest),
            teacher: self.teacher_description.clone(),
            ..ModelMetadata::default()
        }
    }

    /// Everything needed to continue exactly where training stopped.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        self.trainer.checkpoint()
    }

    /// The model as a file with `dtype` weights. Rounded weights shift every channel a little:
    /// for int8, the batch-norm statistics are measured again with the rounded weights (on the
    /// rows the last epoch's end used) and the result rounded again (the weights are on the
    /// int8 grid already, so only the statistics change). The PublicTest accuracy recorded is
    /// that of the weights as stored.
    pub fn export(&self, data: &Dataset, dtype: StoredDtype) -> Result<Export> {
        let mut network = as_stored(self.network(), dtype)?;
        if dtype == StoredDtype::Int8 && network.has_batch_norm() {
            recalibrate_batch_norm(&mut network, data, &self.recalibration_rows());
            network = as_stored(&network, dtype)?;
        }
        let mut metadata = self.metadata();
        let public_test = match (dtype, self.evaluation(Usage::PublicTest)) {
            (StoredDtype::F32, Some(evaluation)) if !self.trained_since_evaluation => Some(evaluation.clone()),
            _ if self.test_rows.is_empty() => None,
            _ => {
                metadata.privatetest_accuracy = None;
                Some(evaluate(&mut network, data, &self.test_rows, self.tta))
            }
        };
        metadata.publictest_accuracy = public_test.as_ref().map(|e| e.accuracy);
        let bytes = save_model(&network, dtype, &metadata)?;
        Ok(Export { bytes, network, public_test })
    }
}

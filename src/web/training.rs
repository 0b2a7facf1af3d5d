//! Training from JS: the worker creates a [`Training`] and calls `trainSteps` in small slices,
//! so it can report progress and honour pause and stop between them.

use std::collections::HashMap;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::{first_conv_filters, inspect_network, js_error, parse_tta, parse_usage, to_js, FaceDataset, Model};
use crate::data::input::AugmentConfig;
use crate::data::Usage;
use crate::models::{save_model, StoredDtype};
use crate::train::{evaluate, predict_faces, TrainConfig, Trainer, Tta};

/// Training in progress: owns the model being trained.
#[wasm_bindgen]
pub struct Training {
    trainer: Trainer,
    /// Results to store with the model (`train_rows`, `publictest_accuracy`, ...), as the CLI does.
    results: HashMap<String, String>,
}

#[derive(Serialize)]
struct StepsReport {
    loss: f32,
    correct: usize,
    samples: usize,
    lr: f32,
    /// Epochs completed after these steps.
    epoch: usize,
    epoch_finished: bool,
    finished: bool,
}

#[wasm_bindgen]
impl Training {
    /// Trains `model` (consumed) on the first `limit` Training rows of `data` (all when
    /// `limit` is undefined) with `config` (see `defaultTrainConfig()`).
    #[wasm_bindgen(constructor)]
    pub fn new(model: Model, data: &FaceDataset, config: JsValue, limit: Option<usize>) -> Result<Training, JsError> {
        let config: TrainConfig =
            serde_wasm_bindgen::from_value(config).map_err(|e| JsError::new(&format!("invalid training options: {e}")))?;
        let mut rows = data.data.indices_of(Usage::Training);
        if let Some(limit) = limit {
            rows.truncate(limit);
        }
        let results = HashMap::from([("train_rows".to_string(), rows.len().to_string())]);
        let trainer = Trainer::new(model.network, config, &data.data, rows).map_err(js_error)?;
        Ok(Training { trainer, results })
    }

    /// Up to `steps` batches, stopping early at the end of an epoch so the caller can evaluate.
    /// Returns `{ loss, correct, samples, lr, epoch, epoch_finished, finished }` over those steps.
    #[wasm_bindgen(js_name = trainSteps)]
    pub fn train_steps(&mut self, data: &FaceDataset, steps: u32) -> Result<JsValue, JsError> {
        let (mut loss_sum, mut correct, mut samples, mut lr, mut epoch_finished) = (0.0f32, 0, 0, 0.0, false);
        for _ in 0..steps {
            if self.trainer.is_finished() {
                break;
            }
            let step = self.trainer.train_step(&data.data);
            loss_sum += step.loss * step.samples as f32;
            correct += step.correct;
            samples += step.samples;
            lr = step.lr;
            if step.epoch_finished {
                epoch_finished = true;
                break;
            }
        }
        to_js(&StepsReport {
            loss: loss_sum / samples.max(1) as f32,
            correct,
            samples,
            lr,
            epoch: self.trainer.epoch(),
            epoch_finished,
            finished: self.trainer.is_finished(),
        })
    }

    #[wasm_bindgen(js_name = stepsPerEpoch)]
    pub fn steps_per_epoch(&self) -> usize {
        self.trainer.steps_per_epoch()
    }

    pub fn epoch(&self) -> usize {
        self.trainer.epoch()
    }

    /// Training faces [`Training::recalibrate`] measures: 0 when the model has no batch-norm
    /// layers (nothing to do).
    #[wasm_bindgen(js_name = recalibrationFaces)]
    pub fn recalibration_faces(&self) -> usize {
        self.trainer.recalibration_faces()
    }

    /// Re-measures the batch-norm statistics on un-augmented training faces ("precise
    /// batch-norm"); the worker calls it after every epoch, before evaluating.
    pub fn recalibrate(&mut self, data: &FaceDataset) {
        self.trainer.recalibrate_batch_norm(&data.data);
    }

    /// Accuracy, per-class accuracy and confusion matrix of the current model on the rows of
    /// one Usage, over the test-time views `tta` (`none`, `flip` or `flip_shift`); the
    /// accuracy is also stored with the model (`publictest_accuracy`, ...).
    pub fn evaluate(&mut self, data: &FaceDataset, usage: &str, tta: &str) -> Result<JsValue, JsError> {
        let usage = parse_usage(usage)?;
        let tta = parse_tta(tta)?;
        let rows = data.data.indices_of(usage);
        if rows.is_empty() {
            return Err(JsError::new(&format!("the data has no {} rows", usage.name())));
        }
        let evaluation = evaluate(&mut self.trainer.network, &data.data, &rows, tta);
        self.results.insert(format!("{}_accuracy", usage.name().to_lowercase()), format!("{:.4}", evaluation.accuracy));
        to_js(&evaluation)
    }

    /// Each layer's output for one 48x48 face, as `Model.inspect` gives it.
    pub fn inspect(&mut self, face_u8: &[u8]) -> Result<JsValue, JsError> {
        inspect_network(&mut self.trainer.network, face_u8)
    }

    /// The first convolution's filters, as `Model.filters` gives them.
    pub fn filters(&self) -> Result<JsValue, JsError> {
        first_conv_filters(&self.trainer.network)
    }

    /// Probabilities (`rows.length × 7`) of the current model for the given dataset rows.
    pub fn predict(&mut self, data: &FaceDataset, rows: &[u32]) -> Result<Vec<f32>, JsError> {
        let mut faces = Vec::with_capacity(rows.len() * crate::data::FACE_PIXELS);
        for &row in rows {
            let row = row as usize;
            if row >= data.data.len() {
                return Err(JsError::new(&format!("row {row} is past the end ({} rows)", data.data.len())));
            }
            faces.extend_from_slice(data.data.face(row));
        }
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        Ok(predict_faces(&mut self.trainer.network, &faces, Tta::None).into_raw_vec_and_offset().0)
    }

    /// The model as trained so far, as a `.safetensors` file (load it with `Model.fromBytes`),
    /// with the training options and the latest evaluations in its metadata.
    #[wasm_bindgen(js_name = modelBytes)]
    pub fn model_bytes(&self, half: bool) -> Result<Vec<u8>, JsError> {
        let dtype = if half { StoredDtype::F16 } else { StoredDtype::F32 };
        let mut metadata = self.results.clone();
        metadata.insert("training".to_string(), serde_json::to_string(self.trainer.config()).map_err(|e| JsError::new(&e.to_string()))?);
        metadata.insert("epochs_completed".to_string(), self.trainer.epoch().to_string());
        save_model(&self.trainer.network, dtype, &metadata).map_err(js_error)
    }
}

/// The augmentation the page switches on with its checkbox (random shifts, rotations, zoom,
/// flips and erasing), as a plain object for `TrainConfig.augment`.
#[wasm_bindgen(js_name = defaultAugmentConfig)]
pub fn default_augment_config() -> Result<JsValue, JsError> {
    to_js(&AugmentConfig::default())
}

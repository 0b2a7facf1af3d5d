//! Training from JS: the worker creates a [`Training`] and calls `trainSteps` in small slices,
//! so it can report progress and honour pause and stop between them.

use std::collections::HashMap;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::{js_error, parse_usage, to_js, FaceDataset, Model};
use crate::data::Usage;
use crate::models::{save_model, StoredDtype};
use crate::train::{evaluate, predict_faces, TrainConfig, Trainer, Tta};

/// Training in progress: owns the model being trained.
#[wasm_bindgen]
pub struct Training {
    trainer: Trainer,
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
        let trainer = Trainer::new(model.network, config, &data.data, rows).map_err(js_error)?;
        Ok(Training { trainer })
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

    pub fn evaluate(&mut self, data: &FaceDataset, usage: &str) -> Result<JsValue, JsError> {
        let rows = data.data.indices_of(parse_usage(usage)?);
        if rows.is_empty() {
            return Err(JsError::new(&format!("the data has no {usage} rows")));
        }
        to_js(&evaluate(&mut self.trainer.network, &data.data, &rows, Tta::None))
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

    /// The model as trained so far, as a `.safetensors` file (load it with `Model.fromBytes`).
    #[wasm_bindgen(js_name = modelBytes)]
    pub fn model_bytes(&self, half: bool) -> Result<Vec<u8>, JsError> {
        let dtype = if half { StoredDtype::F16 } else { StoredDtype::F32 };
        let metadata = HashMap::from([(
            "training".to_string(),
            serde_json::to_string(self.trainer.config()).map_err(|e| JsError::new(&e.to_string()))?,
        )]);
        save_model(&self.trainer.network, dtype, &metadata).map_err(js_error)
    }
}

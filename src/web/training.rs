//! Training from JS: a thin handle over the library's [`TrainingRun`]. The training worker
//! calls `trainSlice` for a few steps at a time (so it can report, pause and stop between
//! calls), `endEpoch` when a slice ends an epoch, and `export` for the finished model.

use wasm_bindgen::prelude::*;

use super::{first_conv_filters, inspect_network, js_error, parse_tta, parse_usage, to_js, FaceDataset, Model};
use crate::inference::{predict_faces, Tta};
use crate::models::StoredDtype;
use crate::train::{TrainConfig, TrainingRun};

/// Training in progress: owns the model being trained.
#[wasm_bindgen]
pub struct Training {
    run: TrainingRun,
}

#[wasm_bindgen]
impl Training {
    /// Trains `model` (consumed) on the first `limit` Training rows of `data` (all when
    /// `limit` is undefined) with `config` (a recipe's `config` from `trainingOptions()`),
    /// evaluating PublicTest after each epoch over the views `tta` (`none`, `flip`, `flip_shift`).
    #[wasm_bindgen(constructor)]
    pub fn new(model: Model, data: &FaceDataset, config: JsValue, limit: Option<usize>, tta: &str) -> Result<Training, JsError> {
        let config: TrainConfig =
            serde_wasm_bindgen::from_value(config).map_err(|e| JsError::new(&format!("invalid training options: {e}")))?;
        let run = TrainingRun::new(model.network, config, &data.data, limit, parse_tta(tta)?).map_err(js_error)?;
        Ok(Training { run })
    }

    /// Up to `steps` optimiser steps, stopping early at the end of an epoch (then call
    /// `endEpoch`): `{ loss, correct, samples, steps, lr, epochs_completed, epochs_trained,
    /// epoch_finished, finished }` over those steps.
    #[wasm_bindgen(js_name = trainSlice)]
    pub fn train_slice(&mut self, data: &FaceDataset, steps: u32) -> Result<JsValue, JsError> {
        to_js(&self.run.train_slice(&data.data, steps as usize))
    }

    /// The end of an epoch (or of a run stopped mid-epoch): batch-norm statistics re-measured,
    /// PublicTest evaluated. `{ epoch, train: { loss, accuracy, samples }, recalibrated_on,
    /// public_test }`.
    #[wasm_bindgen(js_name = endEpoch)]
    pub fn end_epoch(&mut self, data: &FaceDataset) -> Result<JsValue, JsError> {
        to_js(&self.run.end_epoch(&data.data))
    }

    /// Faces `endEpoch` passes forward, to say how long it takes.
    #[wasm_bindgen(js_name = epochEndFaces)]
    pub fn epoch_end_faces(&self) -> usize {
        self.run.epoch_end_faces()
    }

    #[wasm_bindgen(getter, js_name = trainRows)]
    pub fn train_rows(&self) -> usize {
        self.run.train_rows().len()
    }

    #[wasm_bindgen(js_name = epochsCompleted)]
    pub fn epochs_completed(&self) -> usize {
        self.run.epochs_completed()
    }

    /// Accuracy, per-class accuracy and confusion matrix of the current weights on the rows of
    /// one Usage (`null` when the data has none); recorded in the model's metadata.
    pub fn evaluate(&mut self, data: &FaceDataset, usage: &str) -> Result<JsValue, JsError> {
        to_js(&self.run.evaluate(&data.data, parse_usage(usage)?))
    }

    /// Each layer's output for one 48x48 face, as `Model.inspect` gives it.
    pub fn inspect(&mut self, face_u8: &[u8]) -> Result<JsValue, JsError> {
        inspect_network(self.run.network_mut(), face_u8)
    }

    /// The first convolution's filters, as `Model.filters` gives them.
    pub fn filters(&self) -> Result<JsValue, JsError> {
        first_conv_filters(self.run.network())
    }

    /// Probabilities (`rows.length × 7`) of the current model for the given dataset rows.
    pub fn predict(&mut self, data: &FaceDataset, rows: &[u32]) -> Result<Vec<f32>, JsError> {
        let faces = data.faces(rows)?;
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        Ok(predict_faces(self.run.network_mut(), &faces, Tta::None).into_raw_vec_and_offset().0)
    }

    /// The model as trained so far, as a `.safetensors` file with `precision` weights (`f32`,
    /// `f16` or `int8`, the batch-norm statistics re-measured after rounding to int8), exactly
    /// as `fer train` writes it; load it with `Model.fromBytes`.
    pub fn export(&self, data: &FaceDataset, precision: &str) -> Result<Vec<u8>, JsError> {
        let dtype = StoredDtype::from_name(precision).map_err(js_error)?;
        Ok(self.run.export(&data.data, dtype).map_err(js_error)?.bytes)
    }
}

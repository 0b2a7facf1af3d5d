//! Calibration from JS: a thin handle over the library's [`calibrate::Calibration`]. The
//! training worker calls `advance` until it says `finished`, posting the progress between
//! calls, then `report` and `export`.

use wasm_bindgen::prelude::*;

use super::{js_error, to_js, FaceDataset, Model};
use crate::data::{spread_evenly, Dataset, Usage, FACE_PIXELS};
use crate::models::{save_model, ModelMetadata, StoredDtype};
use crate::train::calibrate::{self, calibrated_metadata, CalibrationConfig, ReferenceRows};
use crate::FerError;

#[wasm_bindgen]
pub struct Calibration {
    calibration: calibrate::Calibration,
    metadata: ModelMetadata,
    stored: StoredDtype,
}

/// The default options, as `new Calibration(…, options)` takes them (`{ held_out_share, views,
/// epochs, … }`).
#[wasm_bindgen(js_name = calibrationOptions)]
pub fn calibration_options() -> Result<JsValue, JsError> {
    to_js(&CalibrationConfig::default())
}

#[wasm_bindgen]
impl Calibration {
    /// Calibrates `model` (consumed) to the captures: `faces` 48x48 bytes each, end to end,
    /// `labels` one expression (0–6) each, in capture order. `options` overrides
    /// `calibrationOptions()` (`undefined` for none).
    #[wasm_bindgen(constructor)]
    pub fn new(model: Model, faces: &[u8], labels: &[u8], options: JsValue) -> Result<Calibration, JsError> {
        Self::start(model, faces, labels, options, None)
    }

    /// As `new`, with the loaded FER2013 file: `replay_rows` of its Training rows are fitted
    /// alongside the captures, `check_rows` of its PublicTest rows scored before and after.
    #[wasm_bindgen(js_name = withReference)]
    pub fn with_reference(
        model: Model,
        faces: &[u8],
        labels: &[u8],
        options: JsValue,
        reference: &FaceDataset,
        replay_rows: usize,
        check_rows: usize,
    ) -> Result<Calibration, JsError> {
        let data = &reference.data;
        let replay = spread_evenly(&data.indices_of(Usage::Training), replay_rows);
        let check = spread_evenly(&data.indices_of(Usage::PublicTest), check_rows);
        Self::start(model, faces, labels, options, Some(ReferenceRows { data, replay: &replay, check: &check }))
    }

    fn start(
        model: Model,
        faces: &[u8],
        labels: &[u8],
        options: JsValue,
        reference: Option<ReferenceRows>,
    ) -> Result<Calibration, JsError> {
        let config: CalibrationConfig = if options.is_undefined() || options.is_null() {
            CalibrationConfig::default()
        } else {
            serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("invalid calibration options: {e}")))?
        };
        let captures = captures_dataset(faces, labels).map_err(js_error)?;
        let Model { network, metadata, stored } = model;
        let calibration = calibrate::Calibration::new(network, &captures, reference, config).map_err(js_error)?;
        Ok(Calibration { calibration, metadata, stored })
    }

    /// The next fraction of a second of work: `{ phase: "features" | "fitting", done, total }`,
    /// or `{ phase: "finished" }`.
    pub fn advance(&mut self) -> Result<JsValue, JsError> {
        to_js(&self.calibration.advance())
    }

    /// `{ fitted, held_out, held_out_accuracy: { before, after } | null, reference_accuracy,
    /// final_loss, held_out_read_personally, reference_faces: { faces, read_personally },
    /// verdict: { accepted, reason } }` once finished (`null` before).
    pub fn report(&self) -> Result<JsValue, JsError> {
        to_js(&self.calibration.report())
    }

    /// Whether the calibration finished and its verdict kept the calibrated model.
    pub fn accepted(&self) -> bool {
        self.calibration.accepted()
    }

    /// The calibrated model as a `.safetensors` file, in the starting model's precision, with
    /// the report in its metadata; load it with `Model.fromBytes`. Refused, with the verdict's
    /// reason, when the calibration did not help (the current model stays).
    pub fn export(&self) -> Result<Vec<u8>, JsError> {
        let report =
            self.calibration.report().ok_or_else(|| JsError::new("the calibration has not finished: call advance() until it says so"))?;
        if !report.verdict.accepted {
            return Err(JsError::new(&format!("calibration: {}", report.verdict.reason)));
        }
        let metadata = calibrated_metadata(self.metadata.clone(), report);
        save_model(self.calibration.network(), self.stored, &metadata).map_err(js_error)
    }
}

/// The captures as a dataset, every row a capture (its usage unused).
fn captures_dataset(faces: &[u8], labels: &[u8]) -> crate::Result<Dataset> {
    if faces.len() != labels.len() * FACE_PIXELS {
        return Err(FerError::Data(format!(
            "{} bytes of faces for {} labels: each capture is one label and {FACE_PIXELS} bytes",
            faces.len(),
            labels.len()
        )));
    }
    let mut captures = Dataset::new();
    for (face, &label) in faces.chunks_exact(FACE_PIXELS).zip(labels) {
        captures.push(face, label, Usage::Training)?;
    }
    Ok(captures)
}

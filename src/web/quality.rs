//! How reliable a camera face's reading is: `face::quality` for JS.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::to_js;
use crate::data::FACE_PIXELS;
use crate::face::quality::{assess_face, ACCURACY_DROP_POINTS, BRIGHT_BRIGHTNESS, DARK_BRIGHTNESS, LOW_CONTRAST, SMALL_FACE_PX};

#[derive(Serialize)]
struct FaceQualityJs {
    size: f32,
    brightness: f32,
    contrast: f32,
    /// The limits passed, of 'small', 'dark', 'bright', 'low-contrast'.
    flags: Vec<&'static str>,
}

/// `{ size, brightness, contrast, flags }` of a 48x48 grey crop (`Camera.crops()`) whose square
/// was `sizePx` source pixels a side (the face's `cropSide`): brightness and contrast are the
/// crop's mean grey and its standard deviation (0–1); `flags` lists the limits it passes, of
/// 'small', 'dark', 'bright' and 'low-contrast' (see `qualityThresholds`).
#[wasm_bindgen(js_name = faceQuality)]
pub fn face_quality(crop: &[u8], #[wasm_bindgen(js_name = sizePx)] size_px: f32) -> Result<JsValue, JsError> {
    let crop: &[u8; FACE_PIXELS] =
        crop.try_into().map_err(|_| JsError::new(&format!("a face crop is 48x48 grey: {FACE_PIXELS} bytes, got {}", crop.len())))?;
    let quality = assess_face(crop, size_px);
    let flags = [(quality.small, "small"), (quality.dark, "dark"), (quality.bright, "bright"), (quality.low_contrast, "low-contrast")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    to_js(&FaceQualityJs { size: quality.size_px, brightness: quality.brightness, contrast: quality.contrast, flags })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QualityThresholds {
    small_face_px: f32,
    dark_brightness: f32,
    bright_brightness: f32,
    low_contrast: f32,
    accuracy_drop_points: f32,
}

/// `{ smallFacePx, darkBrightness, brightBrightness, lowContrast, accuracyDropPoints }`: a face
/// is 'small' under `smallFacePx` source pixels a side, 'dark' under `darkBrightness`, 'bright'
/// over `brightBrightness`, 'low-contrast' under `lowContrast`; each where the shipped models'
/// accuracy has fallen `accuracyDropPoints` points (docs/quality.md).
#[wasm_bindgen(js_name = qualityThresholds)]
pub fn quality_thresholds() -> JsValue {
    let thresholds = QualityThresholds {
        small_face_px: SMALL_FACE_PX,
        dark_brightness: DARK_BRIGHTNESS,
        bright_brightness: BRIGHT_BRIGHTNESS,
        low_contrast: LOW_CONTRAST,
        accuracy_drop_points: ACCURACY_DROP_POINTS,
    };
    to_js(&thresholds).unwrap_or(JsValue::NULL)
}

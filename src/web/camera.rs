//! The camera's wasm handle. Frames reach wasm without a copy per frame through JS: the page's
//! camera worker asks for a frame buffer once per frame size, keeps a typed-array view over it in
//! `memory.buffer`, writes each frame's RGBA pixels into that view, and calls
//! `processVideoFrame`. Results are read the same way, through views over fixed buffers:
//! `faces()`, `crops()`, `probs()` and `timings()` are addresses in wasm memory.
//!
//! Views over `memory.buffer` go stale when wasm memory grows (any call may grow it); JS makes
//! them again whenever `memory.buffer` is not the buffer they were made on.

use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::{js_error, parse_tta, to_js, Model};
use crate::data::{FACE_SIDE, NUM_CLASSES};
use crate::face::frame::check_frame_size;
use crate::face::pipeline::FoundFace;
use crate::face::{FacePipeline, Frame, FrameKind, StageTimings, TinyFaceDetector, MAX_FACES};

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`, in the page and in workers alike.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// `f32`s per face in [`Camera::faces`]: the detector's box (left, top, width, height) and
/// score, the square cropped from it (left, top, width, height), in frame pixels, then the
/// label to show, whether to show the face yet and its id (see `face::tracks`).
pub const FACE_FIELDS: usize = 12;
/// `f32`s in [`Camera::timings`]: milliseconds to find, crop and classify, then 1 if the whole
/// frame was searched, 0 if only around the faces already known.
pub const TIMING_FIELDS: usize = 4;
const _: () = assert!(std::mem::size_of::<FoundFace>() == FACE_FIELDS * 4);
const _: () = assert!(std::mem::size_of::<StageTimings>() == TIMING_FIELDS * 4);

/// Finds, crops and classifies faces in camera frames or photos.
#[wasm_bindgen]
pub struct Camera {
    pipeline: FacePipeline,
    frame_rgba: Vec<u8>,
    frame_width: usize,
    frame_height: usize,
}

#[wasm_bindgen]
impl Camera {
    /// Loads the face detector from face-api.js's `tiny_face_detector_model-weights_manifest.json`
    /// (as text) and `tiny_face_detector_model.bin`.
    #[wasm_bindgen(constructor)]
    pub fn new(detector_manifest_json: &str, detector_weights: &[u8]) -> Result<Camera, JsError> {
        let detector = TinyFaceDetector::from_tfjs(detector_manifest_json, detector_weights).map_err(js_error)?;
        Ok(Camera { pipeline: FacePipeline::new(detector), frame_rgba: Vec::new(), frame_width: 0, frame_height: 0 })
    }

    /// Sizes the frame buffer for `width × height` RGBA frames and returns its address: write
    /// each frame into `new Uint8ClampedArray(memory.buffer, address, width * height * 4)`. The
    /// buffer moves only when the size changes.
    #[wasm_bindgen(js_name = frameBuffer)]
    pub fn frame_buffer(&mut self, width: usize, height: usize) -> Result<*mut u8, JsError> {
        check_frame_size(width, height).map_err(js_error)?;
        if (width, height) != (self.frame_width, self.frame_height) {
            self.frame_rgba = vec![0; width * height * 4];
            (self.frame_width, self.frame_height) = (width, height);
        }
        Ok(self.frame_rgba.as_mut_ptr())
    }

    /// Finds the faces in the frame buffer (a frame of a video stream: found at the speed the
    /// stream needs, probabilities smoothed per face over frames), crops and classifies them
    /// with `model`; returns how many faces (0 to `cameraLayout().maxFaces`).
    #[wasm_bindgen(js_name = processVideoFrame)]
    pub fn process_video_frame(&mut self, model: &mut Model) -> Result<usize, JsError> {
        self.process(model, FrameKind::Video)
    }

    /// Like `processVideoFrame` for a photo: searched more finely, for smaller faces, and not
    /// smoothed with what came before.
    #[wasm_bindgen(js_name = processPhoto)]
    pub fn process_photo(&mut self, model: &mut Model) -> Result<usize, JsError> {
        self.process(model, FrameKind::Photo)
    }

    fn process(&mut self, model: &mut Model, kind: FrameKind) -> Result<usize, JsError> {
        if self.frame_rgba.is_empty() {
            return Err(JsError::new("no frame yet: call frameBuffer(width, height) and write a frame into it first"));
        }
        let frame = Frame::new(&self.frame_rgba, self.frame_width, self.frame_height).map_err(js_error)?;
        self.pipeline.run(&frame, kind, &mut model.network, performance_now).map_err(js_error)
    }

    /// Test-time augmentation for the faces of the following frames: `none`, `flip` (each face
    /// and its mirror image, averaged: twice the classify time) or `flip_shift` (10 views).
    #[wasm_bindgen(js_name = setTta)]
    pub fn set_tta(&mut self, tta: &str) -> Result<(), JsError> {
        self.pipeline.set_tta(parse_tta(tta)?);
        Ok(())
    }

    /// Forgets the faces of earlier frames: the next video frame starts a new video (a new
    /// stream, or the same one after a pause), searched whole, its faces given new ids.
    pub fn forget(&mut self) {
        self.pipeline.forget();
    }

    /// Address of the last frame's faces, best first: `FACE_FIELDS` `f32`s each (see
    /// `cameraLayout()`), room for `maxFaces`.
    pub fn faces(&self) -> *const f32 {
        self.pipeline.faces().as_ptr().cast()
    }

    /// Address of the 48x48 grey crops the model saw (`u8`), one per face.
    pub fn crops(&self) -> *const u8 {
        self.pipeline.crops().as_ptr().cast()
    }

    /// Address of the seven probabilities (`f32`) per face: Angry, Disgust, Fear, Happy, Sad,
    /// Surprise, Neutral.
    pub fn probs(&self) -> *const f32 {
        self.pipeline.probs().as_ptr().cast()
    }

    /// Address of the last frame's stage timings: milliseconds to find, crop, classify, and
    /// whether the whole frame was searched (`f32`s, see [`TIMING_FIELDS`]).
    pub fn timings(&self) -> *const f32 {
        std::ptr::from_ref(self.pipeline.timings()).cast()
    }
}

/// The shapes of the buffers `Camera` lends, to size the views over them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CameraLayout {
    max_faces: usize,
    face_fields: usize,
    /// Where each field of a face's record is, in `f32`s from its start.
    face_field: FaceFieldOffsets,
    crop_side: usize,
    classes: usize,
    timing_fields: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FaceFieldOffsets {
    box_left: usize,
    box_top: usize,
    box_width: usize,
    box_height: usize,
    score: usize,
    crop_left: usize,
    crop_top: usize,
    crop_side: usize,
    label: usize,
    shown: usize,
    id: usize,
}

/// Offset of a field of [`FoundFace`] in `f32`s.
macro_rules! f32_offset {
    ($($path:tt)+) => {
        std::mem::offset_of!(FoundFace, $($path)+) / std::mem::size_of::<f32>()
    };
}

/// `{ maxFaces, faceFields, faceField: { boxLeft, boxTop, boxWidth, boxHeight, score, cropLeft,
/// cropTop, cropSide, label, shown, id }, cropSide, classes, timingFields }`: faces a frame
/// reports at most, `f32`s per face in `faces()` and where in them each field is, the crops'
/// side in pixels, probabilities per face in `probs()`, `f32`s in `timings()`.
#[wasm_bindgen(js_name = cameraLayout)]
pub fn camera_layout() -> Result<JsValue, JsError> {
    to_js(&CameraLayout {
        max_faces: MAX_FACES,
        face_fields: FACE_FIELDS,
        face_field: FaceFieldOffsets {
            box_left: f32_offset!(detection.rect.left),
            box_top: f32_offset!(detection.rect.top),
            box_width: f32_offset!(detection.rect.width),
            box_height: f32_offset!(detection.rect.height),
            score: f32_offset!(detection.score),
            crop_left: f32_offset!(crop.left),
            crop_top: f32_offset!(crop.top),
            crop_side: f32_offset!(crop.width),
            label: f32_offset!(label),
            shown: f32_offset!(shown),
            id: f32_offset!(id),
        },
        crop_side: FACE_SIDE,
        classes: NUM_CLASSES,
        timing_fields: TIMING_FIELDS,
    })
}

//! Faces in camera frames and photos, cropped the way FER2013's faces are framed, classified:
//! RGBA [`Frame`] → [`TinyFaceDetector`] boxes → [`fer_square`] (square, brows to chin, as
//! FER2013) → [`crop_face`] (grey, area-averaged to 48x48) → the classifier → probabilities
//! smoothed per face over time ([`FaceTracks`]). [`FacePipeline`] runs it all on one frame.

pub mod crop;
pub mod detector;
pub mod finder;
pub mod frame;
pub mod pipeline;
pub mod quality;
pub mod resample;
mod tfjs;
pub mod tracks;

pub use crop::{crop_face, fer_square, FER_FRAMING};
pub use detector::{DetectorOptions, TinyFaceDetector};
pub use finder::{Confirmation, FaceFinder, FinderOptions, Search};
pub use frame::Frame;
pub use pipeline::{FacePipeline, FrameKind, StageTimings, CONFIRM_NEW_FACES, MAX_FACES, VIDEO_FINDER};
pub use quality::{assess_face, FaceQuality};
pub use resample::AreaResampler;
pub use tracks::FaceTracks;

/// A rectangle in frame pixels (x to the right, y down).
/// `#[repr(C)]`: JS reads arrays of these as plain `Float32Array`s.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Rect {
    pub left: f32,
    pub top: f32,
    pub width: f32,
    pub height: f32,
}

impl Rect {
    pub const fn new(left: f32, top: f32, width: f32, height: f32) -> Rect {
        Rect { left, top, width, height }
    }

    pub fn centre(&self) -> (f32, f32) {
        (self.left + self.width / 2.0, self.top + self.height / 2.0)
    }

    /// Intersection over union: 0 for disjoint rectangles, 1 for equal ones.
    pub fn iou(&self, other: &Rect) -> f32 {
        let overlap_x = ((self.left + self.width).min(other.left + other.width) - self.left.max(other.left)).max(0.0);
        let overlap_y = ((self.top + self.height).min(other.top + other.height) - self.top.max(other.top)).max(0.0);
        let intersection = overlap_x * overlap_y;
        let union = self.width * self.height + other.width * other.height - intersection;
        if union > 0.0 {
            intersection / union
        } else {
            0.0
        }
    }
}

/// A face the detector found: its box and its score (0–1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Detection {
    pub rect: Rect,
    pub score: f32,
}

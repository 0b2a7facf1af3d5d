//! The FER2013 crop: a square around the detected face, framed as FER2013's faces are (tight
//! from the brows to the chin, the face centred), turned grey and area-averaged to 48x48.

use super::frame::Frame;
use super::resample::AreaResampler;
use super::Rect;
use crate::data::{FACE_PIXELS, FACE_SIDE};
use crate::Result;

/// Where FER2013's square sits relative to a TinyFaceDetector box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FerFraming {
    /// The square's side over the box's width.
    pub side_per_width: f32,
    /// The square's centre minus the box's centre, over the box's width (x right, y down).
    pub centre_dx: f32,
    pub centre_dy: f32,
}

/// Calibrated on FER2013 itself: 300 PublicTest faces placed into 640x480 frames at 96 to 320
/// px, found by the detector at the camera's input size, each box compared with where the
/// 48x48 face really was (medians of 843 boxes): FER's square is 9% narrower than the box and
/// sits higher (the box reaches below the chin). The square then overlaps the true one with
/// IoU quartiles 0.72, 0.80, 0.86. Measured by `cargo test --release --test face --
/// --ignored --nocapture fer_faces` (needs ../shared).
pub const FER_FRAMING: FerFraming = FerFraming { side_per_width: 0.911, centre_dx: 0.026, centre_dy: -0.093 };

/// The square FER2013 would have cut around the face the detector boxed as `face`.
pub fn fer_square(face: &Rect) -> Rect {
    let side = face.width * FER_FRAMING.side_per_width;
    let (x, y) = face.centre();
    let (centre_x, centre_y) = (x + FER_FRAMING.centre_dx * face.width, y + FER_FRAMING.centre_dy * face.width);
    Rect::new(centre_x - side / 2.0, centre_y - side / 2.0, side, side)
}

/// Luma from RGB with the ITU-R BT.601 weights, as OpenCV's and most tools' grey conversion
/// (how FER2013's colour sources were most likely turned grey).
pub fn grey(rgb: &[f32]) -> u8 {
    (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).round().clamp(0.0, 255.0) as u8
}

/// Cuts `square` out of `frame` as a 48x48 grey face.
pub fn crop_face(frame: &Frame, square: Rect, resampler: &mut AreaResampler, face_u8: &mut [u8; FACE_PIXELS]) -> Result<()> {
    let mut rgb = [0.0f32; FACE_PIXELS * 3];
    resampler.resample_rgb(frame, square, FACE_SIDE, FACE_SIDE, &mut rgb)?;
    for (pixel, out) in rgb.chunks_exact(3).zip(face_u8.iter_mut()) {
        *out = grey(pixel);
    }
    Ok(())
}

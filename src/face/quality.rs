//! How far a face's crop is from the faces the classifier learnt from, so that the page can say
//! when a reading is unreliable: a face too small in the source (its crop is enlarged, detail
//! lost), too dark, washed out, or flat. Each threshold is where the first of the two shipped
//! models to get there has fallen [`ACCURACY_DROP_POINTS`] points on FER2013 PublicTest (run in
//! integer arithmetic, as the camera runs them) below its accuracy on the faces as they are.
//! The curves, the command that measures them (`examples/face_quality.rs`) and what the flags
//! mean for faces naturally dark or flat are in docs/quality.md.

use crate::data::FACE_PIXELS;

/// The accuracy drop (percentage points below the unchanged faces) at which each threshold is
/// set: a flagged face is read this much less reliably by the more sensitive shipped model.
pub const ACCURACY_DROP_POINTS: f32 = 5.0;

/// A face whose square is under this many source pixels a side is `small`: its 48x48 crop is
/// an enlargement of fewer pixels than FER2013's 48 (the default model falls 5 points at 40.4
/// px, `fast` at 36.0).
pub const SMALL_FACE_PX: f32 = 40.0;
/// A crop whose mean grey (0–1) is under this is `dark` (faces darkened until the default
/// model falls 5 points have a median brightness of 0.275; `fast`'s, 0.245).
pub const DARK_BRIGHTNESS: f32 = 0.28;
/// A crop whose mean grey (0–1) is over this is `bright`, washed out (both models: 0.68).
pub const BRIGHT_BRIGHTNESS: f32 = 0.68;
/// A crop whose grey standard deviation (0–1) is under this is `low_contrast` (the default
/// model: 0.126, `fast`: 0.114; FER2013's faces have a median of 0.21).
pub const LOW_CONTRAST: f32 = 0.13;

/// What [`assess_face`] measured of one crop, and which limits it is past.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaceQuality {
    /// The side of the cropped face square in source-image pixels.
    pub size_px: f32,
    /// The mean grey of the 48x48 crop, 0–1.
    pub brightness: f32,
    /// The standard deviation of the crop's grey, 0–1.
    pub contrast: f32,
    pub small: bool,
    pub dark: bool,
    pub bright: bool,
    pub low_contrast: bool,
}

impl FaceQuality {
    /// Whether any limit is passed.
    pub fn is_doubtful(&self) -> bool {
        self.small || self.dark || self.bright || self.low_contrast
    }
}

/// The mean and the standard deviation of a crop's grey, each 0–1.
pub fn brightness_and_contrast(crop_u8: &[u8]) -> (f32, f32) {
    let n = crop_u8.len().max(1) as f64;
    let sum: f64 = crop_u8.iter().map(|&p| p as f64).sum();
    let mean = sum / n;
    let variance = crop_u8.iter().map(|&p| (p as f64 - mean).powi(2)).sum::<f64>() / n;
    ((mean / 255.0) as f32, (variance.sqrt() / 255.0) as f32)
}

/// Measures a 48x48 grey crop (as [`super::crop_face`] cuts it) of a face whose square was
/// `size_px` source pixels a side, and flags what is past the thresholds above. A size that is
/// not a finite positive number is taken as unknown: not flagged `small`.
pub fn assess_face(crop_u8: &[u8; FACE_PIXELS], size_px: f32) -> FaceQuality {
    let (brightness, contrast) = brightness_and_contrast(crop_u8);
    FaceQuality {
        size_px,
        brightness,
        contrast,
        small: size_px.is_finite() && size_px > 0.0 && size_px < SMALL_FACE_PX,
        dark: brightness < DARK_BRIGHTNESS,
        bright: brightness > BRIGHT_BRIGHTNESS,
        low_contrast: contrast < LOW_CONTRAST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FACE_SIDE;

    #[test]
    fn a_uniform_crop_has_its_grey_as_brightness_and_no_contrast() {
        let quality = assess_face(&[51; FACE_PIXELS], 100.0);
        assert!((quality.brightness - 0.2).abs() < 1e-6 && quality.contrast == 0.0);
        assert!(quality.low_contrast && !quality.small);
    }

    #[test]
    fn contrast_is_the_standard_deviation_of_the_grey() {
        // Half black, half white: mean 0.5, standard deviation 0.5.
        let mut crop = [0u8; FACE_PIXELS];
        crop[..FACE_PIXELS / 2].fill(255);
        let quality = assess_face(&crop, 48.0);
        assert!((quality.brightness - 0.5).abs() < 1e-6 && (quality.contrast - 0.5).abs() < 1e-6);
        assert!(!quality.is_doubtful(), "{quality:?}");
    }

    #[test]
    fn each_flag_is_set_past_its_threshold_and_only_there() {
        let grey = |value: f32| -> [u8; FACE_PIXELS] {
            // A checkerboard of ±64 around `value` (0–255): contrast 0.25.
            std::array::from_fn(|i| if (i / FACE_SIDE + i).is_multiple_of(2) { value + 64.0 } else { value - 64.0 }.clamp(0.0, 255.0) as u8)
        };
        let typical = assess_face(&grey(128.0), 96.0);
        assert!(!typical.is_doubtful(), "{typical:?}");
        assert!(assess_face(&grey(128.0), SMALL_FACE_PX - 1.0).small);
        assert!(!assess_face(&grey(128.0), SMALL_FACE_PX).small);
        assert!(!assess_face(&grey(128.0), f32::NAN).small, "an unknown size is not small");
        let dark = assess_face(&[(DARK_BRIGHTNESS * 255.0 - 2.0) as u8; FACE_PIXELS], 96.0);
        assert!(dark.dark && !dark.bright);
        let bright = assess_face(&[(BRIGHT_BRIGHTNESS * 255.0 + 2.0) as u8; FACE_PIXELS], 96.0);
        assert!(bright.bright && !bright.dark);
        // Alternating 128 ± amplitude: standard deviation = amplitude.
        let stripes = |amplitude: f32| -> [u8; FACE_PIXELS] {
            std::array::from_fn(|i| if i % 2 == 0 { 128.0 + amplitude } else { 128.0 - amplitude }.round() as u8)
        };
        assert!(assess_face(&stripes(LOW_CONTRAST * 255.0 * 0.8), 96.0).low_contrast);
        assert!(!assess_face(&stripes(LOW_CONTRAST * 255.0 * 1.2), 96.0).low_contrast);
    }
}

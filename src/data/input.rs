//! Faces (48x48 `u8`) → network input (`f32`), with the training-time augmentation: one random
//! affine warp (shift, rotation, scale, horizontal flip) sampled bilinearly, then random erasing.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::face::{FACE_PIXELS, FACE_SIDE};
use crate::engine::Rng;

/// Pixel → input value: centred on mid-grey, roughly unit spread (FER2013's pixel std is ~65).
pub fn normalize_pixel(pixel: f32) -> f32 {
    (pixel - 128.0) / 64.0
}

/// `face_u8` (48x48) → `out` (48x48 inputs), unchanged.
pub fn face_to_input(face_u8: &[u8], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(face_u8) {
        *o = normalize_pixel(p as f32);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Largest shift in pixels, each axis.
    pub max_shift: f32,
    /// Largest rotation in degrees, either way.
    pub max_rotation_deg: f32,
    /// Largest relative zoom in or out (0.1 = ±10%).
    pub max_scale: f32,
    /// Mirror half of the faces left-right.
    pub flip: bool,
    /// Probability of blanking one random rectangle (2–15% of the face).
    pub erase_probability: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig { max_shift: 4.0, max_rotation_deg: 10.0, max_scale: 0.1, flip: true, erase_probability: 0.5 }
    }
}

impl AugmentConfig {
    /// Each limit within what still shows a face: a shift within the face, a zoom that keeps
    /// it (a scale of 1 − max_scale must stay positive), a probability.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let within = |value: f32, low: f32, high: f32| value >= low && value <= high;
        let side = FACE_SIDE as f32;
        if !within(self.max_shift, 0.0, side) {
            Err(format!("augmentation shift {} must be 0 to {side} pixels", self.max_shift))
        } else if !within(self.max_rotation_deg, 0.0, 180.0) {
            Err(format!("augmentation rotation {} must be 0 to 180 degrees", self.max_rotation_deg))
        } else if !within(self.max_scale, 0.0, 0.9) {
            Err(format!("augmentation zoom {} must be 0 to 0.9", self.max_scale))
        } else if !within(self.erase_probability, 0.0, 1.0) {
            Err(format!("erasing probability {} must be 0 to 1", self.erase_probability))
        } else {
            Ok(())
        }
    }
}

/// An affine view of a face: where each output pixel samples the source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warp {
    pub shift_x: f32,
    pub shift_y: f32,
    pub rotation_rad: f32,
    pub scale: f32,
    pub flip: bool,
}

impl Warp {
    pub const IDENTITY: Warp = Warp { shift_x: 0.0, shift_y: 0.0, rotation_rad: 0.0, scale: 1.0, flip: false };

    fn random(config: &AugmentConfig, rng: &mut Rng) -> Warp {
        let mut symmetric = |limit: f32| if limit > 0.0 { rng.random_range(-limit..=limit) } else { 0.0 };
        let shift_x = symmetric(config.max_shift);
        let shift_y = symmetric(config.max_shift);
        let rotation_rad = symmetric(config.max_rotation_deg).to_radians();
        let scale = 1.0 + symmetric(config.max_scale);
        let flip = config.flip && rng.random::<bool>();
        Warp { shift_x, shift_y, rotation_rad, scale, flip }
    }

    /// Renders the warped face: output = rotate·scale·flip(source − centre) + centre + shift,
    /// so each output pixel reads the source at the inverse transform, bilinearly, with the
    /// border pixels extended outwards.
    pub fn apply(&self, face_u8: &[u8], out: &mut [f32]) {
        let side = FACE_SIDE as f32;
        let centre = (side - 1.0) / 2.0;
        let (sin, cos) = self.rotation_rad.sin_cos();
        let last = FACE_SIDE as isize - 1;
        let pixel = |x: isize, y: isize| face_u8[(y.clamp(0, last) * FACE_SIDE as isize + x.clamp(0, last)) as usize] as f32;
        for y in 0..FACE_SIDE {
            for x in 0..FACE_SIDE {
                let (ux, uy) = (x as f32 - centre - self.shift_x, y as f32 - centre - self.shift_y);
                let mut sx = (cos * ux + sin * uy) / self.scale;
                let sy = (-sin * ux + cos * uy) / self.scale;
                if self.flip {
                    sx = -sx;
                }
                // Far outside the face every sample is a border pixel; bounded, no cast can overflow.
                let (sx, sy) = ((sx + centre).clamp(-2.0, side + 1.0), (sy + centre).clamp(-2.0, side + 1.0));
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let top = pixel(x0, y0) * (1.0 - fx) + pixel(x0 + 1, y0) * fx;
                let bottom = pixel(x0, y0 + 1) * (1.0 - fx) + pixel(x0 + 1, y0 + 1) * fx;
                out[y * FACE_SIDE + x] = normalize_pixel(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
}

/// A randomly augmented copy of `face_u8` in `out`.
pub fn augment_face(face_u8: &[u8], out: &mut [f32], config: &AugmentConfig, rng: &mut Rng) {
    debug_assert_eq!(face_u8.len(), FACE_PIXELS);
    Warp::random(config, rng).apply(face_u8, out);
    if rng.random::<f32>() < config.erase_probability {
        let area = rng.random_range(0.02..0.15) * FACE_PIXELS as f32;
        let aspect = rng.random_range(0.3f32..3.3).sqrt();
        let h = ((area * aspect).sqrt() as usize).clamp(1, FACE_SIDE);
        let w = ((area / aspect).sqrt() as usize).clamp(1, FACE_SIDE);
        // u32, not usize: rand draws a usize range differently on 32-bit wasm and 64-bit
        // native, and a seed must give the same faces on both.
        let top = rng.random_range(0..=(FACE_SIDE - h) as u32) as usize;
        let left = rng.random_range(0..=(FACE_SIDE - w) as u32) as usize;
        for row in out.chunks_exact_mut(FACE_SIDE).skip(top).take(h) {
            row[left..left + w].fill(0.0);
        }
    }
}

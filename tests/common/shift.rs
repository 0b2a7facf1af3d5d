//! Consistent changes in how faces look, as a different camera, room and person would make
//! them: exposure, contrast, light from one side, blur, vignetting, a tone curve and sensor
//! noise. The calibration tests fit a model to faces seen through one of them and check what
//! it does to the same faces without it.

use super::Lcg;
use fer_cnn::data::{FACE_PIXELS, FACE_SIDE};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    /// Box blur radius in pixels (0 = none, 1 = 3x3, 2 = 5x5).
    pub blur: usize,
    /// Tone curve on 0–1 brightness (1 = none, below 1 lifts the shadows).
    pub gamma: f32,
    /// Contrast around mid-grey (1 = unchanged).
    pub contrast: f32,
    /// The grey level mid-grey becomes.
    pub brightness: f32,
    /// Light falling across the face: the gain goes from 1 − strength to 1 + strength along
    /// the direction (an angle in radians, 0 = brighter to the right).
    pub light_strength: f32,
    pub light_angle: f32,
    /// Darker corners: the gain falls by this much at the corners.
    pub vignette: f32,
    /// Sensor noise, standard deviation in grey levels.
    pub noise: f32,
}

impl Shift {
    /// The shift of the first measurements (issue 36): blur, contrast halved around a brighter
    /// mean, light from the left, noise σ ≈ 8.
    pub const EVENING_DESK: Shift =
        Shift { blur: 1, gamma: 1.0, contrast: 0.5, brightness: 140.0, light_strength: 0.3, light_angle: 0.0, vignette: 0.0, noise: 8.0 };

    /// The kinds of shift that calibration was tuned on (docs/calibration.md).
    pub fn tuning() -> Vec<(&'static str, Shift)> {
        vec![
            ("evening desk", Shift::EVENING_DESK),
            (
                "dim room, noisy sensor",
                Shift {
                    blur: 0,
                    gamma: 1.0,
                    contrast: 0.6,
                    brightness: 70.0,
                    light_strength: 0.0,
                    light_angle: 0.0,
                    vignette: 0.1,
                    noise: 14.0,
                },
            ),
            (
                "window glare",
                Shift {
                    blur: 0,
                    gamma: 0.6,
                    contrast: 0.8,
                    brightness: 165.0,
                    light_strength: 0.45,
                    light_angle: 3.1,
                    vignette: 0.0,
                    noise: 3.0,
                },
            ),
            (
                "soft webcam",
                Shift {
                    blur: 2,
                    gamma: 1.0,
                    contrast: 0.75,
                    brightness: 120.0,
                    light_strength: 0.0,
                    light_angle: 0.0,
                    vignette: 0.4,
                    noise: 4.0,
                },
            ),
            (
                "light from above",
                Shift {
                    blur: 0,
                    gamma: 1.6,
                    contrast: 1.1,
                    brightness: 115.0,
                    light_strength: 0.35,
                    light_angle: -1.57,
                    vignette: 0.0,
                    noise: 6.0,
                },
            ),
        ]
    }

    /// A random shift of every kind above mixed (for tests that must not use the tuning ones).
    pub fn draw(rng: &mut Lcg) -> Shift {
        let mut uniform = |low: f32, high: f32| low + (high - low) * (rng.next() % 10_000) as f32 / 10_000.0;
        let blur = uniform(0.0, 2.99) as usize;
        let gamma = uniform(0.6, 1.6);
        let contrast = uniform(0.45, 0.9);
        let brightness = if uniform(0.0, 1.0) < 0.5 { uniform(60.0, 95.0) } else { uniform(150.0, 175.0) };
        let light_strength = uniform(0.15, 0.45);
        let light_angle = uniform(-std::f32::consts::PI, std::f32::consts::PI);
        let vignette = uniform(0.0, 0.4);
        let noise = uniform(3.0, 12.0);
        Shift { blur, gamma, contrast, brightness, light_strength, light_angle, vignette, noise }
    }

    /// `face` (48x48) as the shifted camera would see it; `rng` draws the noise.
    pub fn apply(&self, face: &[u8], rng: &mut Lcg) -> Vec<u8> {
        assert_eq!(face.len(), FACE_PIXELS);
        let side = FACE_SIDE as isize;
        let at = |x: isize, y: isize| face[y.clamp(0, side - 1) as usize * FACE_SIDE + x.clamp(0, side - 1) as usize] as f32;
        let r = self.blur as isize;
        let (dx, dy) = (self.light_angle.cos(), self.light_angle.sin());
        let mut out = vec![0u8; FACE_PIXELS];
        for y in 0..side {
            for x in 0..side {
                let mut sum = 0.0;
                for oy in -r..=r {
                    for ox in -r..=r {
                        sum += at(x + ox, y + oy);
                    }
                }
                let blurred = sum / ((2 * r + 1) * (2 * r + 1)) as f32;
                let toned = 255.0 * (blurred / 255.0).powf(self.gamma);
                let exposed = self.brightness + self.contrast * (toned - 128.0);
                // Position from −1 to 1 on each axis.
                let (px, py) = (2.0 * x as f32 / (side - 1) as f32 - 1.0, 2.0 * y as f32 / (side - 1) as f32 - 1.0);
                let light = 1.0 + self.light_strength * (px * dx + py * dy) / (dx.abs() + dy.abs());
                let corners = 1.0 - self.vignette * (px * px + py * py) / 2.0;
                // Roughly normal noise (sum of 4 uniforms, σ = 1 after scaling).
                let noise = ((0..4).map(|_| (rng.next() % 1000) as f32 / 1000.0).sum::<f32>() - 2.0) * 1.732 * self.noise;
                out[y as usize * FACE_SIDE + x as usize] = (exposed * light * corners + noise).round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }
}

/// `face` seen through [`Shift::EVENING_DESK`].
pub fn shifted_face(face: &[u8], rng: &mut Lcg) -> Vec<u8> {
    Shift::EVENING_DESK.apply(face, rng)
}

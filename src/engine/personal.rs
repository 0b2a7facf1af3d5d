//! A personal branch beside a model's own weights: weights fitted to one person's camera and
//! light (`train::calibrate`), and a gate that sends a face to them only when it looks like
//! the captures they were fitted on. Faces that look like the faces the model was trained on
//! keep the model's own reading, so calibrating cannot make the model worse on them.
//!
//! The gate reads a few numbers of the input itself ([`appearance_statistics`]: brightness,
//! contrast, light from one side, sharpness, noise, clipping, vignetting), so each face costs
//! one forward pass, through one set of weights or the other.

use ndarray::Axis;

use crate::data::FACE_SIDE;
use crate::{FerError, Result};

/// How many appearance statistics describe a face.
pub const APPEARANCE_STATISTICS: usize = 8;
/// The gate's inputs: the standardised statistics and their squares, so that it can enclose a
/// cluster of captures in the middle of the range of ordinary faces.
pub const GATE_INPUTS: usize = 2 * APPEARANCE_STATISTICS;

/// Numbers that a camera, a room's light and a lens change and an expression hardly does,
/// from one 48x48 face as the network reads it (`normalize_pixel` values). Unchanged by a
/// mirror image, so that mirrored test-time views take the same branch.
pub fn appearance_statistics(face: &[f32]) -> [f32; APPEARANCE_STATISTICS] {
    let side = FACE_SIDE;
    let n = (side * side) as f32;
    let at = |x: usize, y: usize| face[y * side + x];
    let mean = face.iter().sum::<f32>() / n;
    let variance = face.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let spread = variance.sqrt().max(1e-3);
    let (mut left, mut right, mut top, mut bottom, mut centre, mut border) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let (mut centre_n, mut border_n) = (0.0f32, 0.0f32);
    let (mut step, mut curvature, mut clipped) = (0.0f32, 0.0f32, 0.0f32);
    for y in 0..side {
        for x in 0..side {
            let v = at(x, y);
            if x < side / 2 {
                left += v;
            } else {
                right += v;
            }
            if y < side / 2 {
                top += v;
            } else {
                bottom += v;
            }
            let ring = x.min(y).min(side - 1 - x).min(side - 1 - y);
            if ring < 6 {
                border += v;
                border_n += 1.0;
            } else if ring >= 14 {
                centre += v;
                centre_n += 1.0;
            }
            // Pixels at the ends of the 0–255 range: (0 − 128) / 64 and (255 − 128) / 64.
            if !(-1.98..=1.97).contains(&v) {
                clipped += 1.0;
            }
            if x + 1 < side && y + 1 < side {
                step += (at(x + 1, y) - v).abs() + (at(x, y + 1) - v).abs();
            }
            if (1..side - 1).contains(&x) && (1..side - 1).contains(&y) {
                curvature += (4.0 * v - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1)).abs();
            }
        }
    }
    let half = n / 2.0;
    let inner = ((side - 1) * (side - 1)) as f32;
    let interior = ((side - 2) * (side - 2)) as f32;
    let step = step / (2.0 * inner);
    let curvature = curvature / interior;
    [
        mean,
        spread.ln(),
        ((left - right) / half).abs() / spread,
        (top - bottom) / half / spread,
        (centre / centre_n - border / border_n) / spread,
        (step / spread).max(1e-4).ln(),
        (curvature / step.max(1e-4)).max(1e-4).ln(),
        clipped / n,
    ]
}

/// Decides, from a face's appearance statistics, which weights read it: a logistic model of
/// "looks like the captures" against "looks like the reference faces", on the statistics
/// standardised by `centre` and `scale` and on their squares.
#[derive(Clone, Debug, PartialEq)]
pub struct AppearanceGate {
    pub centre: [f32; APPEARANCE_STATISTICS],
    pub scale: [f32; APPEARANCE_STATISTICS],
    pub weight: [f32; GATE_INPUTS],
    pub bias: f32,
}

impl AppearanceGate {
    /// The names of [`AppearanceGate::tensors`].
    pub const TENSORS: [&'static str; 4] = ["centre", "scale", "weight", "bias"];

    /// A gate that sends every face to the personal weights.
    pub fn everything() -> AppearanceGate {
        AppearanceGate { centre: [0.0; APPEARANCE_STATISTICS], scale: [1.0; APPEARANCE_STATISTICS], weight: [0.0; GATE_INPUTS], bias: 1.0 }
    }

    /// The gate's inputs for one face's statistics.
    pub fn inputs(&self, statistics: &[f32; APPEARANCE_STATISTICS]) -> [f32; GATE_INPUTS] {
        let mut inputs = [0.0; GATE_INPUTS];
        for i in 0..APPEARANCE_STATISTICS {
            let z = (statistics[i] - self.centre[i]) / self.scale[i];
            inputs[i] = z;
            inputs[APPEARANCE_STATISTICS + i] = z * z;
        }
        inputs
    }

    /// The gate's score: above 0, the face looks more like the captures.
    pub fn score(&self, statistics: &[f32; APPEARANCE_STATISTICS]) -> f32 {
        self.inputs(statistics).iter().zip(&self.weight).map(|(x, w)| x * w).sum::<f32>() + self.bias
    }

    pub fn is_personal(&self, statistics: &[f32; APPEARANCE_STATISTICS]) -> bool {
        self.score(statistics) > 0.0
    }

    /// The gate as the tensors a model file stores (`personal.gate.{name}`).
    pub fn tensors(&self) -> Vec<(&'static str, Vec<f32>)> {
        vec![("centre", self.centre.to_vec()), ("scale", self.scale.to_vec()), ("weight", self.weight.to_vec()), ("bias", vec![self.bias])]
    }

    /// The gate from a model file's `personal.gate.*` tensors, by name.
    pub fn from_tensors(mut get: impl FnMut(&str) -> Option<Vec<f32>>) -> Result<AppearanceGate> {
        let mut take = |name: &str, len: usize| {
            let values =
                get(name).ok_or_else(|| FerError::Model(format!("the personal weights have no gate tensor 'personal.gate.{name}'")))?;
            if values.len() != len {
                return Err(FerError::Model(format!("'personal.gate.{name}' has {} values; the gate needs {len}", values.len())));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(FerError::Model(format!("'personal.gate.{name}' holds NaN or infinite values")));
            }
            Ok(values)
        };
        let centre = take("centre", APPEARANCE_STATISTICS)?.try_into().expect("checked length");
        let scale: [f32; APPEARANCE_STATISTICS] = take("scale", APPEARANCE_STATISTICS)?.try_into().expect("checked length");
        if scale.iter().any(|&s| s <= 0.0) {
            return Err(FerError::Model("'personal.gate.scale' must be positive".into()));
        }
        let weight = take("weight", GATE_INPUTS)?.try_into().expect("checked length");
        let bias = take("bias", 1)?[0];
        Ok(AppearanceGate { centre, scale, weight, bias })
    }

    /// Fits the gate: `captures` (statistics of faces the personal weights were fitted on)
    /// against `reference` (statistics of ordinary faces), each group weighing half, with a
    /// small L2 penalty. Plain gradient descent on a convex loss: a few milliseconds.
    pub fn fit(captures: &[[f32; APPEARANCE_STATISTICS]], reference: &[[f32; APPEARANCE_STATISTICS]]) -> AppearanceGate {
        let mut centre = [0.0f32; APPEARANCE_STATISTICS];
        let mut scale = [1.0f32; APPEARANCE_STATISTICS];
        let count = reference.len().max(1) as f32;
        for i in 0..APPEARANCE_STATISTICS {
            centre[i] = reference.iter().map(|s| s[i]).sum::<f32>() / count;
            let variance = reference.iter().map(|s| (s[i] - centre[i]).powi(2)).sum::<f32>() / count;
            scale[i] = variance.sqrt().max(1e-3);
        }
        let mut gate = AppearanceGate { centre, scale, weight: [0.0; GATE_INPUTS], bias: 0.0 };
        let samples: Vec<([f32; GATE_INPUTS], f32, f32)> = captures
            .iter()
            .map(|s| (gate.inputs(s), 1.0, 0.5 / captures.len().max(1) as f32))
            .chain(reference.iter().map(|s| (gate.inputs(s), 0.0, 0.5 / count)))
            .collect();
        const STEPS: usize = 800;
        const RATE: f32 = 0.5;
        const L2: f32 = 1e-3;
        for _ in 0..STEPS {
            let mut grad = [0.0f32; GATE_INPUTS];
            let mut grad_bias = 0.0f32;
            for (x, target, weight) in &samples {
                let z = x.iter().zip(&gate.weight).map(|(a, b)| a * b).sum::<f32>() + gate.bias;
                let error = (1.0 / (1.0 + (-z).exp()) - target) * weight;
                for (g, xi) in grad.iter_mut().zip(x) {
                    *g += error * xi;
                }
                grad_bias += error;
            }
            for (w, g) in gate.weight.iter_mut().zip(grad) {
                *w -= RATE * (g + L2 * *w);
            }
            gate.bias -= RATE * grad_bias;
        }
        gate
    }
}

/// For each face of a batch `[n, 1, 48, 48]`: whether the gate sends it to the personal weights.
pub fn personal_faces(gate: &AppearanceGate, input: &ndarray::ArrayViewD<f32>) -> Vec<bool> {
    input
        .axis_iter(Axis(0))
        .map(|face| {
            let face = face.as_standard_layout();
            gate.is_personal(&appearance_statistics(face.as_slice().expect("standard layout")))
        })
        .collect()
}

/// The weights fitted to one person, and the gate that decides which faces they read.
pub struct Personal {
    pub gate: AppearanceGate,
    /// The model with the personal tensors in place of its own (no branch of its own).
    pub network: super::Network,
}

//! Knowledge distillation (Hinton et al. 2015): a teacher network's class probabilities for
//! every training face, measured once, blended into the training targets. A teacher measured
//! with test-time augmentation hands its averaged views to a single-pass student, and its soft
//! targets down-weight FER2013's mislabelled faces.

use std::collections::HashMap;

use ndarray::{Array2, Axis};

use crate::data::{Dataset, NUM_CLASSES};
use crate::engine::Network;
use crate::inference::{predict_rows, Tta};
use crate::{FerError, Result};

#[derive(Clone, Debug)]
pub struct Teacher {
    probabilities: HashMap<usize, [f32; NUM_CLASSES]>,
    /// Share of the target that is the teacher's: `(1 - w) · label + w · teacher`.
    weight: f32,
}

impl Teacher {
    /// Measures `network`'s probabilities (averaged over `tta`'s views of the clean face) for
    /// `rows` of `data`; `on_progress` gets the number of faces done so far. They are the
    /// plain softmax of its logits, whatever temperature its file gives it (the network's is
    /// set back to 1): the distillation recipes were tuned on those.
    pub fn measure(
        network: &mut Network,
        data: &Dataset,
        rows: &[usize],
        tta: Tta,
        weight: f32,
        mut on_progress: impl FnMut(usize),
    ) -> Result<Teacher> {
        network.set_temperature(1.0)?;
        let mut probabilities = HashMap::with_capacity(rows.len());
        predict_rows(network, data, rows, tta, |chunk, probs| {
            for (&row, p) in chunk.iter().zip(probs.axis_iter(Axis(0))) {
                probabilities.insert(row, std::array::from_fn(|k| p[k]));
            }
            on_progress(probabilities.len());
        });
        Teacher::from_probabilities(probabilities, weight)
    }

    /// A teacher from known probabilities per dataset row; each must be a distribution.
    pub fn from_probabilities(probabilities: HashMap<usize, [f32; NUM_CLASSES]>, weight: f32) -> Result<Teacher> {
        if !(weight > 0.0 && weight <= 1.0) {
            return Err(FerError::Config(format!("distillation weight {weight} must be in (0, 1]")));
        }
        if let Some((row, _)) =
            probabilities.iter().find(|(_, p)| p.iter().any(|&q| !(0.0..=1.0).contains(&q)) || (p.iter().sum::<f32>() - 1.0).abs() > 1e-3)
        {
            return Err(FerError::Model(format!("the teacher's output for row {row} is not a probability distribution")));
        }
        Ok(Teacher { probabilities, weight })
    }

    pub fn weight(&self) -> f32 {
        self.weight
    }

    /// The teacher's probabilities for a dataset row, if it measured that row.
    pub fn probabilities(&self, row: usize) -> Option<&[f32; NUM_CLASSES]> {
        self.probabilities.get(&row)
    }

    /// Blends the teacher's probabilities for `rows` into `targets` (one row each).
    pub(super) fn blend(&self, rows: &[usize], targets: &mut Array2<f32>) {
        for (&row, mut target) in rows.iter().zip(targets.axis_iter_mut(Axis(0))) {
            let teacher = &self.probabilities[&row];
            for (t, &p) in target.iter_mut().zip(teacher) {
                *t = (1.0 - self.weight) * *t + self.weight * p;
            }
        }
    }
}

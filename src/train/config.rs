//! Training options: everything that decides what a run does, as one serialisable record that
//! the CLI builds from flags, the page from the recipe of a preset, and a checkpoint stores.

use serde::{Deserialize, Serialize};

use crate::data::input::AugmentConfig;
use crate::engine::{LrSchedule, OptimizerKind};
use crate::{FerError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Linear warm-up over `warmup_epochs`, then cosine decay to 1% of the rate at the last epoch.
    Cosine {
        warmup_epochs: usize,
    },
}

impl Schedule {
    /// The schedule over optimiser steps for a run of `epochs` of `steps_per_epoch`.
    pub fn over_steps(self, epochs: usize, steps_per_epoch: usize) -> LrSchedule {
        match self {
            Schedule::Constant => LrSchedule::Constant,
            Schedule::Cosine { warmup_epochs } => LrSchedule::Cosine {
                warmup_steps: (warmup_epochs * steps_per_epoch) as u64,
                total_steps: (epochs * steps_per_epoch) as u64,
                min_ratio: 0.01,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub optimizer: OptimizerKind,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub label_smoothing: f32,
    pub augment: Option<AugmentConfig>,
    /// Beta(α, α) mixing of pairs of faces and their targets; 0 turns mixup off.
    pub mixup_alpha: f32,
    /// Weight each sample by `1 / frequency` of its class (normalised to mean 1).
    pub class_weights: bool,
    pub seed: u64,
    /// Sharpness-aware minimisation's neighbourhood radius ρ; 0 turns it off (each step then
    /// costs one forward and backward pass instead of two).
    #[serde(default)]
    pub sam_rho: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            optimizer: OptimizerKind::adam(),
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            label_smoothing: 0.0,
            augment: None,
            mixup_alpha: 0.0,
            class_weights: false,
            seed: 1,
            sam_rho: 0.0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let problem = if self.epochs == 0 {
            Some("epochs must be at least 1".to_string())
        } else if self.batch_size == 0 {
            Some("batch size must be at least 1".into())
        } else if !(self.lr.is_finite() && self.lr > 0.0) {
            Some(format!("learning rate {} must be a positive number", self.lr))
        } else if !(0.0..1.0).contains(&self.label_smoothing) {
            Some(format!("label smoothing {} must be in [0, 1)", self.label_smoothing))
        } else if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            Some(format!("weight decay {} must be 0 or more", self.weight_decay))
        } else if !(self.mixup_alpha >= 0.0 && self.mixup_alpha.is_finite()) {
            Some(format!("mixup alpha {} must be 0 or more", self.mixup_alpha))
        } else if !(self.sam_rho >= 0.0 && self.sam_rho.is_finite()) {
            Some(format!("sharpness-aware radius {} must be 0 or more", self.sam_rho))
        } else if let Err(problem) = self.optimizer.validate() {
            Some(problem)
        } else if let Some(Err(problem)) = self.augment.as_ref().map(AugmentConfig::validate) {
            Some(problem)
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(FerError::Config(p)))
    }
}

//! Checkpoints: everything needed to continue a run exactly where it stopped (at any step),
//! as a safetensors model file whose metadata holds the position and whose extra
//! `optimizer.*` tensors hold the optimiser's state. The trained rows are not stored:
//! resuming must select the same ones (the count is checked).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::distil::Teacher;
use super::trainer::Trainer;
use crate::data::Dataset;
use crate::engine::Tensor;
use crate::models::file::{load_with_extras, save_with_extras};
use crate::models::{ModelMetadata, StoredDtype};
use crate::{FerError, Result};

/// The metadata key a checkpoint's position is stored under.
const CHECKPOINT_KEY: &str = "checkpoint";

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    epoch: usize,
    step: u64,
    cursor: usize,
    optimizer_steps: u64,
    train_rows: usize,
    /// Absent in checkpoints written before distillation existed.
    #[serde(default)]
    distillation_weight: Option<f32>,
}

impl Trainer {
    /// The checkpoint file's bytes.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let (first, second) = self.optimizer.state();
        let mut extras: Vec<(String, &Tensor)> = Vec::new();
        extras.extend(first.iter().enumerate().map(|(i, t)| (format!("optimizer.first.{i}"), t)));
        extras.extend(second.iter().enumerate().map(|(i, t)| (format!("optimizer.second.{i}"), t)));
        let state = CheckpointState {
            config: self.config.clone(),
            epoch: self.epoch,
            step: self.step,
            cursor: self.cursor,
            optimizer_steps: self.optimizer.steps,
            train_rows: self.train_rows.len(),
            distillation_weight: self.teacher.as_ref().map(Teacher::weight),
        };
        let state = serde_json::to_string(&state).map_err(|e| FerError::Model(e.to_string()))?;
        let metadata = ModelMetadata { other: BTreeMap::from([(CHECKPOINT_KEY.to_string(), state)]), ..ModelMetadata::default() };
        save_with_extras(&self.network, StoredDtype::F32, &metadata, &extras)
    }

    /// Continues from [`Trainer::checkpoint`] bytes. `epochs`, when given, replaces the
    /// configured number (to extend a finished run; the schedule stretches accordingly). A run
    /// that distilled must be given its teacher again (teachers are not stored).
    pub fn resume(
        bytes: &[u8],
        data: &Dataset,
        train_rows: Vec<usize>,
        epochs: Option<usize>,
        teacher: Option<Teacher>,
    ) -> Result<Trainer> {
        let (loaded, extras) = load_with_extras(bytes)?;
        let state_json = loaded
            .metadata
            .other
            .get(CHECKPOINT_KEY)
            .ok_or_else(|| FerError::Model("this model file is not a training checkpoint (no 'checkpoint' metadata)".into()))?;
        let state: CheckpointState =
            serde_json::from_str(state_json).map_err(|e| FerError::Model(format!("invalid checkpoint state: {e}")))?;
        if state.train_rows != train_rows.len() {
            return Err(FerError::Config(format!(
                "the checkpoint trained on {} rows, this run selects {}: use the same --csv and --limit",
                state.train_rows,
                train_rows.len()
            )));
        }
        match (state.distillation_weight, &teacher) {
            (Some(weight), None) => {
                return Err(FerError::Config(format!(
                    "the checkpoint distilled from a teacher (weight {weight}): pass the same teacher again"
                )))
            }
            (None, Some(_)) => return Err(FerError::Config("the checkpoint did not distil from a teacher: resume without one".into())),
            _ => {}
        }
        let mut config = state.config;
        if let Some(epochs) = epochs {
            config.epochs = epochs;
        }
        let mut trainer = Trainer::new(loaded.network, config, data, train_rows)?;
        if let Some(teacher) = teacher {
            trainer = trainer.distil_from(teacher)?;
        }
        let take = |prefix: &str| -> Vec<Tensor> {
            let mut tensors: Vec<(usize, Tensor)> = extras
                .iter()
                .filter_map(|(name, t)| name.strip_prefix(prefix).and_then(|i| i.parse().ok()).map(|i: usize| (i, t.clone())))
                .collect();
            tensors.sort_by_key(|(i, _)| *i);
            tensors.into_iter().map(|(_, t)| t).collect()
        };
        trainer.optimizer.set_state(take("optimizer.first."), take("optimizer.second."), state.optimizer_steps);
        trainer.epoch = state.epoch;
        trainer.step = state.step;
        trainer.shuffle();
        trainer.cursor = state.cursor.min(trainer.order.len());
        Ok(trainer)
    }
}

//! The suggested way to train each preset: what the page fills its form with and what the
//! README's commands use. The small models get the paper's setting (Adam 1e-3 on the first
//! 6,000 faces); the VGG-style ones what trains them well (SGD with Nesterov momentum, cosine
//! decay, augmentation, label smoothing, weight decay), in fewer epochs as each face costs
//! about a hundred times more. `fast`, the suggested recipe, trains on every Training face in
//! a number of epochs that fits half an hour in a tab on two cores.

use serde::Serialize;

use super::config::{Schedule, TrainConfig};
use crate::data::input::AugmentConfig;
use crate::engine::OptimizerKind;
use crate::inference::Tta;
use crate::models::{preset, PRESETS};
use crate::Result;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recipe {
    /// Train on the first `limit` Training rows (all when `None`).
    pub limit: Option<usize>,
    pub config: TrainConfig,
    /// The views each epoch's PublicTest evaluation averages over.
    pub tta: Tta,
}

/// The preset the page's training form starts on: it pays off in one sitting in a tab.
pub const SUGGESTED_PRESET: &str = "fast";

/// The recipe for a preset; an unknown name is an error that lists the presets.
pub fn recipe(preset_name: &str) -> Result<Recipe> {
    preset(preset_name)?;
    let paper = Recipe { limit: Some(6000), config: TrainConfig { epochs: 30, ..TrainConfig::default() }, tta: Tta::None };
    let vgg = |epochs, limit| Recipe {
        limit,
        config: TrainConfig {
            epochs,
            lr: 0.01,
            optimizer: OptimizerKind::sgd_nesterov(),
            weight_decay: 5e-4,
            schedule: Schedule::Cosine { warmup_epochs: 1 },
            label_smoothing: 0.1,
            augment: Some(AugmentConfig::default()),
            ..TrainConfig::default()
        },
        tta: Tta::None,
    };
    Ok(match preset_name {
        "deep" => vgg(10, Some(6000)),
        "deeper" => vgg(8, Some(6000)),
        "fast" => vgg(18, None),
        _ => paper,
    })
}

/// A preset as the page lists it: name, description and recipe.
#[derive(Clone, Debug, Serialize)]
pub struct PresetInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub recipe: Recipe,
}

/// Every preset with its recipe, in menu order.
pub fn presets_with_recipes() -> Vec<PresetInfo> {
    PRESETS
        .iter()
        .map(|&(name, description)| PresetInfo { name, description, recipe: recipe(name).expect("every preset has a recipe") })
        .collect()
}

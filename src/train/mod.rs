//! Training: the options ([`config`]), one optimiser step ([`trainer`], with [`distil`]lation,
//! [`mixup`] and [`sam`] as options), precise batch-norm ([`batch_norm`]), checkpoints
//! ([`checkpoint`]), the run every front end drives ([`run`]) and each preset's suggested
//! recipe ([`recipe`]); calibration of a model's classifier to one person ([`calibrate`]).

pub mod batch_norm;
pub mod calibrate;
pub mod checkpoint;
pub mod config;
pub mod distil;
mod mixup;
pub mod recipe;
pub mod run;
mod sam;
pub mod trainer;

pub use batch_norm::{recalibrate_batch_norm, RECALIBRATION_FACES};
pub use calibrate::{
    calibrate, calibrated_metadata, split_captures, Calibration, CalibrationConfig, CalibrationProgress, CalibrationReport, ReferenceRows,
};
pub use config::{Schedule, TrainConfig};
pub use distil::Teacher;
pub use recipe::{presets_with_recipes, recipe, PresetInfo, Recipe, SUGGESTED_PRESET};
pub use run::{training_rows, EpochReport, EpochTotals, Export, SliceReport, TrainingRun};
pub use trainer::{StepMetrics, Trainer};

/// Mixes `seed` with a counter into an independent stream seed (SplitMix64's finaliser).
fn derive_seed(seed: u64, stream: u64, counter: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ counter.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SHUFFLE_STREAM: u64 = 1;
const BATCH_STREAM: u64 = 2;
const RECALIBRATION_STREAM: u64 = 3;

//! One error type for the whole crate: every failure a user can cause (a bad file, a wrong
//! option, a model that does not fit) comes back as a value with a message they can act on.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FerError {
    /// The input data (FER2013 CSV, images) is not usable.
    #[error("data: {0}")]
    Data(String),
    /// A model file or architecture is invalid or does not match.
    #[error("model: {0}")]
    Model(String),
    /// A training or evaluation option is out of range.
    #[error("config: {0}")]
    Config(String),
    /// Training stopped before its end (it diverged).
    #[error("training: {0}")]
    Training(String),
    /// A calibration that did not help: the current model stays.
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, FerError>;

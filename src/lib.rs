//! A convolutional network for facial expression recognition on FER2013 that trains and runs
//! natively and in the browser (WebAssembly), from the same code.
//!
//! Data flows one way: bytes → [`data`] (FER2013 parsing, augmentation) → batches →
//! [`engine`] (tensors, layers, losses, optimisers) built from [`models`] presets →
//! [`inference`] (probabilities, evaluation; [`confidence`] fits the temperature that makes
//! the probabilities mean what they say) and [`train`] (the training run) → [`face`] (the
//! camera's pipeline, which reaches inference, never training) → the native CLI
//! (`src/bin/fer/`) or the wasm API ([`web`]) → the page (`www/`).

pub mod confidence;
pub mod data;
pub mod engine;
pub mod error;
pub mod face;
pub mod inference;
pub mod models;
pub mod train;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{FerError, Result};

/// The crate version, shown by the page and the CLI.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

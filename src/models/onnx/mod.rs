//! ONNX model files: export a network as a graph any ONNX runtime runs from raw pixels, and
//! import graphs made of the operators this engine has (from this exporter, or from PyTorch and
//! other frameworks) as a network. See docs/onnx.md.
//!
//! The exported graph reads `pixels`, float32 `[N, 1, 48, 48]` holding grey values 0–255 as in
//! FER2013's CSV, and returns `probabilities`, float32 `[N, 7]` in FER2013's class order: the
//! input scaling ((p − 128) / 64, `data::input::normalize_pixel`) and the softmax are inside it.
//! Operator set 13 of the default domain (ONNX 1.8, 2020), IR version 7: every current runtime
//! reads it, and it has every operator needed here in its present form (Dropout's ratio as an
//! input, Softmax over one axis).

mod export;
mod external;
mod import;
pub mod proto;

pub use export::export_onnx;
pub use external::{is_plain_file_name, no_external_files, ExternalFiles};
pub use import::{import_onnx, import_onnx_with_external_data, MAX_ONNX_BYTES};

use super::file::{load_model, LoadedModel};
use crate::engine::Padding;
use crate::{FerError, Result};

/// The operator set version of the default domain the exporter writes.
pub const OPSET: i64 = 13;
/// The IR version that goes with [`OPSET`] (ONNX 1.8).
pub const IR_VERSION: i64 = 7;
/// The graph's input: `[N, 1, 48, 48]` grey values 0–255.
pub const INPUT_NAME: &str = "pixels";
/// The graph's output: `[N, 7]` class probabilities.
pub const OUTPUT_NAME: &str = "probabilities";
/// `metadata_props` key of the architecture as JSON (as in a safetensors file's header): import
/// takes the preset's name and its padding spelling from it when the graph agrees with it.
const SPEC_KEY: &str = "spec";

/// A model file of either kind, told apart by content: safetensors (this project's format; its
/// 8-byte header length is followed by the JSON header's `{`), or ONNX (a protocol buffer
/// holding a graph). A file that is neither gets the safetensors loader's explanation.
pub fn load_any_model(bytes: &[u8]) -> Result<LoadedModel> {
    load_any_model_with_external_data(bytes, &mut no_external_files)
}

/// [`load_any_model`] where an ONNX graph may keep weights in other files, read by
/// `read_file` as [`import_onnx_with_external_data`] says.
pub fn load_any_model_with_external_data(bytes: &[u8], read_file: &mut ExternalFiles) -> Result<LoadedModel> {
    if bytes.get(8) == Some(&b'{') {
        return load_model(bytes);
    }
    match import::decode(bytes) {
        Ok(mut model) => {
            external::load_external_data(&mut model, read_file)?;
            import::import_decoded(&model)
        }
        Err(_) => load_model(bytes).map_err(|error| match error {
            FerError::Model(message) => FerError::Model(format!("{message}; nor is it an ONNX model")),
            other => other,
        }),
    }
}

/// The zeros a convolution adds before and after one axis of length `input`: what this engine's
/// `padding` means, written out explicitly. `Same` follows TensorFlow: the output is
/// `ceil(input / stride)` long and an odd total puts the extra zero after (bottom or right).
fn explicit_pads(padding: Padding, input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    match padding {
        Padding::Valid => (0, 0),
        Padding::Explicit(pad) => (pad, pad),
        Padding::Same => {
            let out = input.div_ceil(stride);
            // Saturating: an imported graph's sizes are checked after this (32-bit in wasm).
            let total = out.saturating_sub(1).saturating_mul(stride).saturating_add(kernel).saturating_sub(input);
            (total / 2, total - total / 2)
        }
    }
}

/// Output length of a convolution or pooling window along one padded axis (floor mode), or
/// `None` when the window does not fit.
fn window_output(input: usize, before: usize, after: usize, kernel: usize, stride: usize) -> Option<usize> {
    let padded = input.checked_add(before)?.checked_add(after)?;
    (padded >= kernel && stride > 0).then(|| (padded - kernel) / stride + 1)
}

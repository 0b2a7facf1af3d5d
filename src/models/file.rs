//! Models as safetensors files: every parameter and batch-norm statistic as a named tensor
//! (`layers.{i}.weight`, ...), and in the header metadata the format tag and the architecture
//! as JSON, so a file is loaded without knowing which preset made it. Weights can be stored as
//! f16, which halves the download at no measurable accuracy cost; they are f32 in memory.

use std::collections::HashMap;

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::engine::{ModelSpec, Network, Tensor};
use crate::{FerError, Result};

/// Written in every file's metadata under `format`; files without it are refused.
pub const FORMAT: &str = "fer-cnn/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    F16,
}

pub struct LoadedModel {
    pub network: Network,
    /// The file's metadata besides `format` and `spec` (e.g. how the model was trained).
    pub metadata: HashMap<String, String>,
}

/// Tensors whose names start with this are not part of the model (a training checkpoint's
/// optimiser state): loading a model skips them.
pub const EXTRA_PREFIX: &str = "optimizer.";

/// Serialises the network's tensors and architecture; `metadata` is stored alongside (keys
/// `format` and `spec` are reserved).
pub fn save_model(network: &Network, dtype: StoredDtype, metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    save_with_extras(network, dtype, metadata, &[])
}

/// [`save_model`] plus extra tensors named `optimizer.*`, always stored as f32.
pub fn save_with_extras(
    network: &Network,
    dtype: StoredDtype,
    metadata: &HashMap<String, String>,
    extras: &[(String, &Tensor)],
) -> Result<Vec<u8>> {
    let model_tensors = network.named_tensors().into_iter().map(|(name, t)| (name, t, dtype));
    let extra_tensors = extras.iter().map(|(name, t)| (name.clone(), *t, StoredDtype::F32));
    let encoded: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = model_tensors
        .chain(extra_tensors)
        .map(|(name, tensor, dtype)| {
            let bytes = match dtype {
                StoredDtype::F32 => tensor.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StoredDtype::F16 => tensor.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
            };
            let stored = match dtype {
                StoredDtype::F32 => Dtype::F32,
                StoredDtype::F16 => Dtype::F16,
            };
            (name, tensor.shape().to_vec(), bytes, stored)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(name, shape, bytes, dtype)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes).map_err(model_error)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut header = metadata.clone();
    header.insert("format".into(), FORMAT.into());
    header.insert("spec".into(), serde_json::to_string(network.spec()).map_err(|e| FerError::Model(e.to_string()))?);
    // Without its `std` feature (which does not build for wasm) safetensors uses hashbrown's map.
    safetensors::tensor::serialize(views, Some(header.into_iter().collect())).map_err(model_error)
}

/// Reads a model file: checks the format tag, rebuilds the architecture from the metadata and
/// fills every tensor, checking names, shapes and dtypes (F32, F16 or BF16).
pub fn load_model(bytes: &[u8]) -> Result<LoadedModel> {
    load_with_extras(bytes).map(|(model, _)| model)
}

/// [`load_model`], also returning the `optimizer.*` tensors of a checkpoint.
pub fn load_with_extras(bytes: &[u8]) -> Result<(LoadedModel, Vec<(String, Tensor)>)> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| FerError::Model(format!("not a readable safetensors model file: damaged, truncated or another kind of file ({e})")))?;
    let mut metadata: HashMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    match metadata.remove("format") {
        Some(format) if format == FORMAT => {}
        Some(other) => return Err(FerError::Model(format!("model format '{other}' is not supported (expected '{FORMAT}')"))),
        None => return Err(FerError::Model("safetensors file without a fer-cnn architecture: not a model made by this project".into())),
    }
    let spec_json = metadata.remove("spec").ok_or_else(|| FerError::Model("model file has no 'spec' (architecture) metadata".into()))?;
    let spec: ModelSpec =
        serde_json::from_str(&spec_json).map_err(|e| FerError::Model(format!("the architecture in the file is invalid: {e}")))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| FerError::Model(format!("the model file is damaged or truncated ({e})")))?;

    let mut network = Network::new(spec, 0)?;
    let expected = network.named_tensors().len();
    let model_tensor_count = tensors.names().iter().filter(|n| !n.starts_with(EXTRA_PREFIX)).count();
    if model_tensor_count != expected {
        return Err(FerError::Model(format!("the file has {model_tensor_count} tensors, the architecture needs {expected}")));
    }
    for (name, target) in network.named_tensors_mut() {
        let view = tensors.tensor(&name).map_err(|_| FerError::Model(format!("tensor '{name}' is missing from the file")))?;
        if view.shape() != target.shape() {
            return Err(FerError::Model(format!(
                "tensor '{name}' has shape {:?} in the file, the architecture needs {:?}",
                view.shape(),
                target.shape()
            )));
        }
        let values = decode(&name, &view)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(FerError::Model(format!("tensor '{name}' holds NaN or infinite values")));
        }
        *target = Tensor::from_shape_vec(target.raw_dim(), values).map_err(|e| FerError::Model(e.to_string()))?;
    }
    let mut extras = Vec::new();
    for (name, view) in tensors.iter().filter(|(name, _)| name.starts_with(EXTRA_PREFIX)) {
        let values = decode(name, &view)?;
        let tensor = Tensor::from_shape_vec(ndarray::IxDyn(view.shape()), values).map_err(|e| FerError::Model(e.to_string()))?;
        extras.push((name.to_string(), tensor));
    }
    Ok((LoadedModel { network, metadata }, extras))
}

fn decode(name: &str, view: &TensorView) -> Result<Vec<f32>> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => return Err(FerError::Model(format!("tensor '{name}' is {other:?}; only F32, F16 and BF16 are supported"))),
    })
}

fn model_error(e: safetensors::SafeTensorError) -> FerError {
    FerError::Model(e.to_string())
}

//! Models as safetensors files: every parameter and batch-norm statistic as a named tensor
//! (`layers.{i}.weight`, ...), and in the header metadata the format tag and the architecture
//! as JSON, so a file is loaded without knowing which preset made it. Weights can be stored as
//! f16, which halves the download at no measurable accuracy cost, or as 8-bit integers, which
//! quarters it; they are f32 in memory.

use half::f16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::metadata::ModelMetadata;
use crate::data::{FACE_SIDE, NUM_CLASSES};
use crate::engine::int8::quantise_rows;
use crate::engine::personal::{AppearanceGate, Personal};
use crate::engine::{ModelSpec, Network, Tensor};
use crate::{FerError, Result};

/// Written in every file's metadata under `format`; files without it are refused.
pub const FORMAT: &str = "fer-cnn/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    F16,
    /// Conv and dense weights as 8-bit integers `q` with one f32 scale per output channel
    /// (`w ≈ q · scale`, the scale saved as `{name}.scale`: symmetric per-channel quantisation,
    /// as TensorFlow Lite and PyTorch store weights); biases and batch-norm tensors as f16.
    Int8,
}

impl StoredDtype {
    /// `f32`, `f16` or `int8`, as the page names them.
    pub fn from_name(name: &str) -> Result<StoredDtype> {
        match name {
            "f32" => Ok(StoredDtype::F32),
            "f16" => Ok(StoredDtype::F16),
            "int8" => Ok(StoredDtype::Int8),
            other => Err(FerError::Config(format!("unknown weight precision \"{other}\": use f32, f16 or int8"))),
        }
    }

    /// The page's name for it (the inverse of [`StoredDtype::from_name`]).
    pub fn name(self) -> &'static str {
        match self {
            StoredDtype::F32 => "f32",
            StoredDtype::F16 => "f16",
            StoredDtype::Int8 => "int8",
        }
    }
}

/// Name suffix of the per-channel scales of an int8 tensor.
const SCALE_SUFFIX: &str = ".scale";

pub struct LoadedModel {
    pub network: Network,
    /// How the file stored its weights (`Int8` when any tensor was 8-bit, else `F16` when any
    /// was 16-bit).
    pub stored: StoredDtype,
    /// The file's metadata besides `format` and `spec` (e.g. how the model was trained).
    pub metadata: ModelMetadata,
}

impl LoadedModel {
    /// A loaded network with what its metadata says about it applied: the temperature
    /// [`Network::predict`] divides the logits by.
    pub fn new(mut network: Network, stored: StoredDtype, metadata: ModelMetadata) -> Result<LoadedModel> {
        network.set_temperature(metadata.temperature.unwrap_or(1.0))?;
        Ok(LoadedModel { network, stored, metadata })
    }
}

/// Tensors whose names start with this are not part of the model (a training checkpoint's
/// optimiser state): loading a model skips them.
pub const EXTRA_PREFIX: &str = "optimizer.";

/// Serialises the network's tensors and architecture; `metadata` is stored alongside (keys
/// `format` and `spec` are reserved).
pub fn save_model(network: &Network, dtype: StoredDtype, metadata: &ModelMetadata) -> Result<Vec<u8>> {
    save_with_extras(network, dtype, metadata, &[])
}

/// [`save_model`] plus extra tensors named `optimizer.*`, always stored as f32.
pub fn save_with_extras(network: &Network, dtype: StoredDtype, metadata: &ModelMetadata, extras: &[(String, &Tensor)]) -> Result<Vec<u8>> {
    let model_tensors = network.named_tensors().into_iter().map(|(name, t)| (name, t, dtype));
    let personal = personal_tensors(network, dtype);
    let personal_tensors = personal.iter().map(|(name, t, dtype)| (name.clone(), t, *dtype));
    let extra_tensors = extras.iter().map(|(name, t)| (name.clone(), *t, StoredDtype::F32));
    let encoded: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = model_tensors
        .chain(personal_tensors)
        .chain(extra_tensors)
        .flat_map(|(name, tensor, dtype)| {
            let shape = tensor.shape().to_vec();
            match dtype {
                StoredDtype::F32 => vec![(name, shape, tensor.iter().flat_map(|v| v.to_le_bytes()).collect(), Dtype::F32)],
                StoredDtype::Int8 if tensor.ndim() >= 2 => {
                    let (quantised, scales) = quantise_per_channel(tensor);
                    let scale_bytes = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
                    vec![
                        (format!("{name}{SCALE_SUFFIX}"), vec![shape[0]], scale_bytes, Dtype::F32),
                        (name, shape, quantised.iter().map(|q| *q as u8).collect(), Dtype::I8),
                    ]
                }
                StoredDtype::F16 | StoredDtype::Int8 => {
                    vec![(name, shape, tensor.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(), Dtype::F16)]
                }
            }
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(name, shape, bytes, dtype)| Ok((name.as_str(), TensorView::new(*dtype, shape.clone(), bytes).map_err(model_error)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut header = metadata.to_map();
    header.insert("format".into(), FORMAT.into());
    header.insert("spec".into(), serde_json::to_string(network.spec()).map_err(|e| FerError::Model(e.to_string()))?);
    // Without its `std` feature (which does not build for wasm) safetensors uses hashbrown's map.
    safetensors::tensor::serialize(views, Some(header.into_iter().collect())).map_err(model_error)
}

/// Names of a personal branch's tensors (`engine::personal`): `personal.layers.…` for each of
/// the model's tensors that the branch changes, `personal.gate.…` for its gate.
pub const PERSONAL_PREFIX: &str = "personal.";
const GATE_PREFIX: &str = "personal.gate.";

/// The personal branch's tensors to save: those of its weights that differ from the model's own
/// (in `dtype`), and the gate's (f32, a few dozen values).
fn personal_tensors(network: &Network, dtype: StoredDtype) -> Vec<(String, Tensor, StoredDtype)> {
    let Some(personal) = network.personal() else {
        return Vec::new();
    };
    let own = network.named_tensors();
    let mut tensors: Vec<(String, Tensor, StoredDtype)> = personal
        .network
        .named_tensors()
        .into_iter()
        .zip(own)
        .filter(|((_, mine), (_, theirs))| mine != theirs)
        .map(|((name, mine), _)| (format!("{PERSONAL_PREFIX}{name}"), mine.clone(), dtype))
        .collect();
    for (name, values) in personal.gate.tensors() {
        let tensor = Tensor::from_shape_vec(ndarray::IxDyn(&[values.len()]), values).expect("a vector");
        tensors.push((format!("{GATE_PREFIX}{name}"), tensor, StoredDtype::F32));
    }
    tensors
}

/// `network` with its weights as `dtype` stores them, so that what is measured on it is what
/// the file gives (f16 or int8 rounding moves a few faces).
pub fn as_stored(network: &Network, dtype: StoredDtype) -> Result<Network> {
    let temperature = (network.temperature() != 1.0).then_some(network.temperature());
    Ok(load_model(&save_model(network, dtype, &ModelMetadata { temperature, ..ModelMetadata::default() })?)?.network)
}

/// The model file `bytes` with its metadata replaced by `metadata`: every tensor's bytes as
/// they were (rewriting an int8 file through [`save_model`] would quantise its weights again).
pub fn with_metadata(bytes: &[u8], metadata: &ModelMetadata) -> Result<Vec<u8>> {
    let loaded = load_model(bytes)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(model_error)?;
    let mut header = metadata.to_map();
    header.insert("format".into(), FORMAT.into());
    header.insert("spec".into(), serde_json::to_string(loaded.network.spec()).map_err(|e| FerError::Model(e.to_string()))?);
    safetensors::tensor::serialize(tensors.tensors(), Some(header.into_iter().collect())).map_err(model_error)
}

/// Reads a model file: checks the format tag, rebuilds the architecture from the metadata and
/// fills every tensor, checking names, shapes and dtypes (F32, F16, BF16, or I8 with scales).
pub fn load_model(bytes: &[u8]) -> Result<LoadedModel> {
    load_with_extras(bytes).map(|(model, _)| model)
}

/// [`load_model`], also returning the `optimizer.*` tensors of a checkpoint.
pub fn load_with_extras(bytes: &[u8]) -> Result<(LoadedModel, Vec<(String, Tensor)>)> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| FerError::Model(format!("not a readable safetensors model file: damaged, truncated or another kind of file ({e})")))?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    match metadata.remove("format") {
        Some(format) if format == FORMAT => {}
        Some(other) => return Err(FerError::Model(format!("model format '{other}' is not supported (expected '{FORMAT}')"))),
        None => return Err(FerError::Model("safetensors file without a fer-cnn architecture: not a model made by this project".into())),
    }
    let spec_json = metadata.remove("spec").ok_or_else(|| FerError::Model("model file has no 'spec' (architecture) metadata".into()))?;
    let spec: ModelSpec =
        serde_json::from_str(&spec_json).map_err(|e| FerError::Model(format!("the architecture in the file is invalid: {e}")))?;
    check_reads_faces(&spec)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| FerError::Model(format!("the model file is damaged or truncated ({e})")))?;

    let mut network = Network::new(spec, 0)?;
    let mut stored = StoredDtype::F32;
    let needed: Vec<String> = network.named_tensors().into_iter().map(|(name, _)| name).collect();
    let mut unused: Vec<&str> = tensors
        .names()
        .into_iter()
        .filter(|n| {
            let own_name = n.strip_prefix(PERSONAL_PREFIX).unwrap_or(n);
            let gate = n.strip_prefix(GATE_PREFIX).is_some_and(|g| AppearanceGate::TENSORS.contains(&g));
            let known = needed.iter().any(|m| m == own_name) || gate;
            !n.starts_with(EXTRA_PREFIX) && !n.ends_with(SCALE_SUFFIX) && !known
        })
        .collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(FerError::Model(format!(
            "the file has tensors the architecture does not use ({}): it was made for another architecture",
            unused.join(", ")
        )));
    }
    for (name, target) in network.named_tensors_mut() {
        read_tensor(&tensors, &name, target, &mut stored)?;
    }
    let personal_names: Vec<&str> =
        tensors.names().into_iter().filter(|n| n.starts_with(PERSONAL_PREFIX) && !n.ends_with(SCALE_SUFFIX)).collect();
    if !personal_names.is_empty() {
        let gate = AppearanceGate::from_tensors(|name| {
            let name = format!("{GATE_PREFIX}{name}");
            tensors.tensor(&name).ok().and_then(|view| decode(&name, &view).ok())
        })?;
        let mut personal = network.copy_without_personal();
        for (name, target) in personal.named_tensors_mut() {
            let stored_name = format!("{PERSONAL_PREFIX}{name}");
            if personal_names.contains(&stored_name.as_str()) {
                read_tensor(&tensors, &stored_name, target, &mut stored)?;
            }
        }
        network.set_personal(Some(Personal { gate, network: personal }));
    }
    let mut extras = Vec::new();
    for (name, view) in tensors.iter().filter(|(name, _)| name.starts_with(EXTRA_PREFIX)) {
        let values = decode(name, &view)?;
        let tensor = Tensor::from_shape_vec(ndarray::IxDyn(view.shape()), values).map_err(|e| FerError::Model(e.to_string()))?;
        extras.push((name.to_string(), tensor));
    }
    let metadata = ModelMetadata::from_map(metadata.into_iter().collect());
    Ok((LoadedModel::new(network, stored, metadata)?, extras))
}

/// Fills `target` with the file's tensor `name`, checking its shape and values; `stored`
/// notes a 16- or 8-bit tensor.
fn read_tensor(tensors: &SafeTensors, name: &str, target: &mut Tensor, stored: &mut StoredDtype) -> Result<()> {
    let view = tensors.tensor(name).map_err(|_| FerError::Model(format!("tensor '{name}' is missing from the file")))?;
    if view.shape() != target.shape() {
        return Err(FerError::Model(format!(
            "tensor '{name}' has shape {:?} in the file, the architecture needs {:?}",
            view.shape(),
            target.shape()
        )));
    }
    let values = match view.dtype() {
        Dtype::I8 => {
            *stored = StoredDtype::Int8;
            dequantise(name, &view, tensors)?
        }
        dtype => {
            if matches!(dtype, Dtype::F16 | Dtype::BF16) && *stored == StoredDtype::F32 {
                *stored = StoredDtype::F16;
            }
            decode(name, &view)?
        }
    };
    if values.iter().any(|v| !v.is_finite()) {
        return Err(FerError::Model(format!("tensor '{name}' holds NaN or infinite values")));
    }
    *target = Tensor::from_shape_vec(target.raw_dim(), values).map_err(|e| FerError::Model(e.to_string()))?;
    Ok(())
}

/// Every model here reads one 48x48 grey face and scores the seven expressions: a file made
/// for other inputs or classes would load, then fail on the first face it is given.
fn check_reads_faces(spec: &ModelSpec) -> Result<()> {
    let face = [1, FACE_SIDE, FACE_SIDE];
    if spec.input != face {
        return Err(FerError::Model(format!(
            "the model '{}' reads inputs of shape {:?} (channels, height, width); faces here are one 48x48 grey image, {face:?}",
            spec.name, spec.input
        )));
    }
    if spec.classes != NUM_CLASSES {
        return Err(FerError::Model(format!(
            "the model '{}' scores {} classes; the expressions here are {NUM_CLASSES} (FER2013's)",
            spec.name, spec.classes
        )));
    }
    Ok(())
}

fn decode(name: &str, view: &TensorView) -> Result<Vec<f32>> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(FerError::Model(format!("tensor '{name}' is {other:?}; only F32, F16, BF16 and (for weights) I8 are supported")))
        }
    })
}

/// Per row of axis 0 (an output channel): `q = round(w / scale)` with `scale = max |w| / 127`.
fn quantise_per_channel(tensor: &Tensor) -> (Vec<i8>, Vec<f32>) {
    let values: Vec<f32> = tensor.iter().copied().collect();
    quantise_rows(&values, tensor.shape()[0])
}

/// The f32 values of an int8 tensor: each row of axis 0 times its scale from `{name}.scale`.
fn dequantise(name: &str, view: &TensorView, tensors: &SafeTensors) -> Result<Vec<f32>> {
    let scale_name = format!("{name}{SCALE_SUFFIX}");
    let scale_view = tensors
        .tensor(&scale_name)
        .map_err(|_| FerError::Model(format!("int8 tensor '{name}' has no scales ('{scale_name}') in the file")))?;
    let rows = view.shape().first().copied().unwrap_or(0);
    if scale_view.shape() != [rows] || rows == 0 {
        return Err(FerError::Model(format!("'{scale_name}' has shape {:?}, expected [{rows}]", scale_view.shape())));
    }
    let scales = decode(&scale_name, &scale_view)?;
    let per_row = view.data().len() / rows;
    Ok(view.data().iter().enumerate().map(|(i, &q)| q as i8 as f32 * scales[i / per_row]).collect())
}

fn model_error(e: safetensors::SafeTensorError) -> FerError {
    FerError::Model(e.to_string())
}

//! Reads weights saved by TensorFlow.js (`model-weights_manifest.json` + the `.bin` shards it
//! names): float32 tensors, and uint8/uint16-quantised ones stored as `q · scale + min`.
//! Hand-written because no crate reads this format; it is a JSON list of names, shapes and
//! dtypes over one concatenated byte buffer.

use std::collections::HashMap;

use serde::Deserialize;

use crate::{FerError, Result};

#[derive(Deserialize)]
struct WeightGroup {
    weights: Vec<WeightEntry>,
}

#[derive(Deserialize)]
struct WeightEntry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    quantization: Option<Quantization>,
}

#[derive(Deserialize)]
struct Quantization {
    dtype: String,
    scale: f32,
    min: f32,
}

enum Storage {
    Float32,
    Uint8 { scale: f32, min: f32 },
    Uint16 { scale: f32, min: f32 },
}

impl Storage {
    fn bytes_per_value(&self) -> usize {
        match self {
            Storage::Float32 => 4,
            Storage::Uint8 { .. } => 1,
            Storage::Uint16 { .. } => 2,
        }
    }

    /// One value from its `bytes_per_value` little-endian bytes.
    fn decode(&self, bytes: &[u8]) -> f32 {
        match *self {
            Storage::Float32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            Storage::Uint8 { scale, min } => bytes[0] as f32 * scale + min,
            Storage::Uint16 { scale, min } => u16::from_le_bytes([bytes[0], bytes[1]]) as f32 * scale + min,
        }
    }
}

/// One tensor: its TensorFlow shape (e.g. `[kh, kw, in, out]` for a convolution) and values in
/// that row-major order.
#[derive(Debug)]
pub struct NamedTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Decodes every tensor of `manifest_json`, reading their bytes one after another from
/// `weights` (the group's shards concatenated in the order the manifest lists them).
pub fn read_weights(manifest_json: &str, weights: &[u8]) -> Result<HashMap<String, NamedTensor>> {
    let bad = |message: String| FerError::Model(format!("TensorFlow.js weights: {message}"));
    let groups: Vec<WeightGroup> =
        serde_json::from_str(manifest_json).map_err(|e| bad(format!("the manifest is not a weights manifest ({e})")))?;
    let mut tensors = HashMap::new();
    let mut offset = 0usize;
    for entry in groups.into_iter().flat_map(|group| group.weights) {
        let count = entry
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("{}: shape {:?} is too large", entry.name, entry.shape)))?;
        let storage = match (&entry.quantization, entry.dtype.as_str()) {
            (None, "float32") => Storage::Float32,
            (Some(q), "float32") if q.dtype == "uint8" => Storage::Uint8 { scale: q.scale, min: q.min },
            (Some(q), "float32") if q.dtype == "uint16" => Storage::Uint16 { scale: q.scale, min: q.min },
            (q, dtype) => {
                let stored = q.as_ref().map_or(dtype, |q| q.dtype.as_str());
                return Err(bad(format!("{}: values stored as {stored} are not supported (float32, uint8 or uint16 only)", entry.name)));
            }
        };
        let bytes_per_value = storage.bytes_per_value();
        let length = count * bytes_per_value;
        let bytes = offset.checked_add(length).and_then(|end| weights.get(offset..end)).ok_or_else(|| {
            bad(format!("the weights file ends before {} ({} bytes, expected more than {})", entry.name, weights.len(), offset))
        })?;
        offset += length;
        let values = bytes.chunks_exact(bytes_per_value).map(|b| storage.decode(b)).collect();
        tensors.insert(entry.name, NamedTensor { shape: entry.shape, values });
    }
    if offset != weights.len() {
        return Err(bad(format!("the manifest describes {offset} bytes but the weights file has {}", weights.len())));
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"[{"paths": ["a.bin"], "weights": [
        {"name": "q", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "f", "shape": [1], "dtype": "float32"}
    ]}]"#;

    #[test]
    fn dequantises_uint8_and_reads_float32_in_manifest_order() {
        let mut bytes = vec![0u8, 1, 2, 255];
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        let tensors = read_weights(MANIFEST, &bytes).unwrap();
        assert_eq!(tensors["q"].shape, vec![2, 2]);
        assert_eq!(tensors["q"].values, vec![-1.0, -0.5, 0.0, 126.5]);
        assert_eq!(tensors["f"].values, vec![1.5]);
    }

    #[test]
    fn short_or_long_weight_files_and_bad_manifests_are_errors() {
        let message = |result: Result<HashMap<String, NamedTensor>>| result.unwrap_err().to_string();
        assert!(message(read_weights(MANIFEST, &[0u8; 6])).contains("ends before f"));
        assert!(message(read_weights(MANIFEST, &[0u8; 9])).contains("describes 8 bytes"));
        assert!(message(read_weights("{}", &[])).contains("not a weights manifest"));
        let int8 = r#"[{"weights": [{"name": "x", "shape": [1], "dtype": "int32"}]}]"#;
        assert!(message(read_weights(int8, &[0u8; 4])).contains("not supported"));
    }
}

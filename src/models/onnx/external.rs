//! ONNX external data: tensors whose values are in another file, as PyTorch 2.x's exporter
//! writes them by default (`NAME.onnx.data` beside `NAME.onnx`). A tensor says where with
//! `data_location = EXTERNAL` and the keys `location` (the file), `offset` and `length` (bytes).
//!
//! The library never opens files: the caller passes a reader that, given a file name, returns
//! that file's bytes (the CLI reads the graph's folder, the page the files the user selected).
//! Only a plain file name is asked for, so a graph cannot make the reader leave its folder
//! (`../secret`, `/etc/passwd`, `C:\x`, `sub/x.data`): those are refused before any reading.

use std::collections::HashMap;

use super::import::MAX_ONNX_BYTES;
use super::proto::{ModelProto, TensorProto, EXTERNAL_DATA};
use crate::{FerError, Result};

/// Reads an external data file by its plain file name (no folder): `Ok(None)` when there is
/// no such file, an error when it cannot be read.
pub type ExternalFiles<'a> = dyn FnMut(&str) -> Result<Option<Vec<u8>>> + 'a;

/// A reader for a graph that comes alone: every external file is missing.
pub fn no_external_files(_: &str) -> Result<Option<Vec<u8>>> {
    Ok(None)
}

/// Whether `location` is a plain file name: a file in the graph's own folder.
pub fn is_plain_file_name(location: &str) -> bool {
    !location.is_empty()
        && location != "."
        && location != ".."
        && !location.contains(['/', '\\', ':'])
        && !location.chars().any(char::is_control)
}

/// Replaces every external tensor's reference (initializers and `Constant` values) by its
/// bytes, read through `read_file`: afterwards the model holds all its values itself.
pub(super) fn load_external_data(model: &mut ModelProto, read_file: &mut ExternalFiles) -> Result<()> {
    let Some(graph) = model.graph.as_mut() else { return Ok(()) };
    let attribute_tensors = graph.node.iter_mut().flat_map(|n| n.attribute.iter_mut()).filter_map(|a| a.t.as_mut());
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    // Tensors may share or overlap byte ranges: the copies together are bounded, not each.
    let mut copied = 0usize;
    for tensor in graph.initializer.iter_mut().chain(attribute_tensors) {
        if tensor.data_location != Some(EXTERNAL_DATA) {
            continue;
        }
        let place = Place::of(tensor)?;
        if !files.contains_key(&place.location) {
            let bytes = read_file(&place.location)?.ok_or_else(|| {
                FerError::Model(format!(
                    "tensor '{}' is stored in a separate file, '{}' (ONNX external data, as PyTorch's exporter writes it \
                     beside the graph), which was not given: load it together with the graph (fer import reads it from \
                     the graph's folder; in the page, select both files at once)",
                    name(tensor),
                    place.location
                ))
            })?;
            if bytes.len() > MAX_ONNX_BYTES {
                return Err(FerError::Model(format!(
                    "the external data file '{}' is {} bytes; at most {MAX_ONNX_BYTES} are read",
                    place.location,
                    bytes.len()
                )));
            }
            files.insert(place.location.clone(), bytes);
        }
        let file = files.get(&place.location).map(Vec::as_slice).unwrap_or_default();
        let length = place.length.unwrap_or_else(|| file.len().saturating_sub(place.offset));
        let range = place.offset..place.offset.saturating_add(length);
        if range.end > file.len() {
            return Err(FerError::Model(format!(
                "tensor '{}' is bytes {} to {} of '{}', which has {} bytes: the data file is truncated or belongs to another graph",
                name(tensor),
                range.start,
                range.end,
                place.location,
                file.len()
            )));
        }
        copied += length;
        if copied > MAX_ONNX_BYTES {
            return Err(FerError::Model(format!("the graph's external tensors add up to more than {MAX_ONNX_BYTES} bytes")));
        }
        tensor.raw_data = Some(file[range].to_vec());
        tensor.data_location = None;
        tensor.external_data.clear();
    }
    Ok(())
}

/// Where an external tensor's bytes are.
struct Place {
    location: String,
    offset: usize,
    length: Option<usize>,
}

impl Place {
    fn of(tensor: &TensorProto) -> Result<Place> {
        let mut place = Place { location: String::new(), offset: 0, length: None };
        for entry in &tensor.external_data {
            let value = entry.value.as_deref().unwrap_or("");
            let number = || {
                value.trim().parse::<usize>().map_err(|_| {
                    FerError::Model(format!(
                        "tensor '{}' has external data {} '{value}', which is not a byte count",
                        name(tensor),
                        entry.key.as_deref().unwrap_or("")
                    ))
                })
            };
            match entry.key.as_deref().unwrap_or("") {
                "location" => place.location = value.to_string(),
                "offset" => place.offset = number()?,
                "length" => place.length = Some(number()?),
                // A SHA-1 of the bytes, for tools that copy the file; the sizes are checked.
                "checksum" => {}
                other => {
                    return Err(FerError::Model(format!(
                        "tensor '{}' has external data key '{other}'; only location, offset, length and checksum are supported",
                        name(tensor)
                    )))
                }
            }
        }
        if place.location.is_empty() {
            return Err(FerError::Model(format!(
                "tensor '{}' is stored outside the graph but names no file (no external data 'location')",
                name(tensor)
            )));
        }
        if !is_plain_file_name(&place.location) {
            return Err(FerError::Model(format!(
                "tensor '{}' is stored in '{}', which is not a file in the graph's own folder: external weights are read \
                 only from a plain file name beside the graph (such as 'model.onnx.data'); save the model again with its \
                 data beside it (onnx.save_model(model, 'model.onnx', save_as_external_data=True, \
                 location='model.onnx.data')) or inside it (save_as_external_data=False)",
                name(tensor),
                place.location.escape_debug()
            )));
        }
        Ok(place)
    }
}

fn name(tensor: &TensorProto) -> &str {
    tensor.name.as_deref().unwrap_or("")
}

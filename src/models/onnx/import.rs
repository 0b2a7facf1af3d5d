//! ONNX graph → network, for graphs that are a chain of the layers this engine has: each node
//! reads the previous node's output (and constant weights) and its output feeds the next one.
//! The file may come from anywhere: every size is checked before anything is allocated for it,
//! and every way a graph can fall outside what the engine runs is an error naming the node.
//!
//! The graph's input scaling must be this engine's, (p − 128) / 64 of the 0–255 pixel `p`,
//! because the engine always feeds its first layer that: a chain of Sub, Div, Mul and Add by
//! scalar constants before the first layer is composed into `a·p + b` and must come to
//! `p / 64 − 2` (so `(p − 128) / 64`, `p / 64 − 2` and `(p − 128) · 0.015625` all import).
//! A graph without it, or with another scaling (`p / 255`), is refused with that explanation;
//! folding another scaling into the first layer would be exact only without zero padding.

use std::collections::HashMap;

use half::f16;
use prost::Message;

use super::external::{load_external_data, no_external_files, ExternalFiles};
use super::proto::{data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use super::{explicit_pads, window_output, SPEC_KEY};
use crate::data::input::normalize_pixel;
use crate::data::{FACE_SIDE, NUM_CLASSES};
use crate::engine::layers::{checked_size, BATCH_NORM_EPSILON, MAX_LAYER_WEIGHTS};
use crate::engine::network::MAX_LAYERS;
use crate::engine::{LayerSpec, ModelSpec, Network, Padding, Tensor};
use crate::models::file::{LoadedModel, StoredDtype};
use crate::models::metadata::ModelMetadata;
use crate::{FerError, Result};

/// The largest ONNX file read: its decoded messages take about its size again in memory.
pub const MAX_ONNX_BYTES: usize = 512 << 20;
/// Operator set versions of the default domain whose operators read as this importer reads
/// them (Dropout's ratio became an input in 12, Softmax's axis changed meaning in 13;
/// BatchNormalization's `training_mode` arrived in 14).
const OPSETS: std::ops::RangeInclusive<i64> = 9..=25;
/// The operators a graph may use, for error messages.
const SUPPORTED: &str = "Conv, BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, ReduceMean over height and width, \
                         Gemm, MatMul + Add, Flatten, Reshape, Dropout, Softmax, Identity, Constant, \
                         Sub/Div/Mul/Add by a scalar before the first layer, \
                         and Div/Mul of the class scores by a positive scalar (a temperature) before the Softmax";
/// The operators that make or pass on a layer (Constant and the input scaling aside).
const LAYER_OPERATORS: &[&str] = &[
    "Identity",
    "Conv",
    "BatchNormalization",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Add",
    "Dropout",
    "Softmax",
    "Sub",
    "Div",
    "Mul",
];
/// Longest model name kept from a graph.
const MAX_NAME_CHARS: usize = 100;

/// Reads an ONNX model whose graph is a chain of operators this engine has (see
/// [`SUPPORTED`]) into a network and its metadata (`metadata_props` under the keys a
/// safetensors file uses). A file written by [`export_onnx`](super::export_onnx) comes back
/// with the same architecture and bit-identical weights. A graph whose weights are in
/// another file (ONNX external data) needs [`import_onnx_with_external_data`].
pub fn import_onnx(bytes: &[u8]) -> Result<LoadedModel> {
    import_onnx_with_external_data(bytes, &mut no_external_files)
}

/// [`import_onnx`] for a graph that may keep weights in other files (ONNX external data, as
/// PyTorch 2.x's exporter writes `NAME.onnx.data` beside `NAME.onnx`): `read_file` is given
/// each file's plain name (never a path: a graph naming anything outside its own folder is
/// refused first) and returns its bytes, or `None` when there is no such file.
pub fn import_onnx_with_external_data(bytes: &[u8], read_file: &mut ExternalFiles) -> Result<LoadedModel> {
    let mut model = decode(bytes)?;
    load_external_data(&mut model, read_file)?;
    import_decoded(&model)
}

/// The ONNX model in `bytes`, which must hold a graph with operators; nothing is checked
/// beyond that.
pub(super) fn decode(bytes: &[u8]) -> Result<ModelProto> {
    if bytes.len() > MAX_ONNX_BYTES {
        return Err(FerError::Model(format!("the ONNX file is {} bytes; at most {MAX_ONNX_BYTES} are read", bytes.len())));
    }
    let model = ModelProto::decode(bytes)
        .map_err(|e| FerError::Model(format!("not a readable ONNX model: damaged, truncated or another kind of file ({e})")))?;
    if model.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        return Err(FerError::Model("not an ONNX model: the file has no graph of operators".into()));
    }
    Ok(model)
}

/// [`import_onnx`] for a decoded model.
pub(super) fn import_decoded(model: &ModelProto) -> Result<LoadedModel> {
    let graph = model.graph.as_ref().ok_or_else(|| FerError::Model("not an ONNX model: the file has no graph".into()))?;
    let opset = default_opset(model)?;
    let mut walk = Walk::new(graph, opset)?;
    for node in &graph.node {
        walk.node(node)?;
    }
    let mut metadata: HashMap<String, String> =
        model.metadata_props.iter().filter_map(|p| Some((p.key.clone()?, p.value.clone()?))).collect();
    let stored_spec = metadata.remove(SPEC_KEY).and_then(|json| serde_json::from_str::<ModelSpec>(&json).ok());
    metadata.remove("format");
    let graph_name = graph.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or("onnx");
    let Walk { layers, layer_inputs, tensors, stored, temperature, .. } = walk.finish(graph)?;
    let spec = ModelSpec {
        name: graph_name.chars().take(MAX_NAME_CHARS).collect(),
        input: [1, FACE_SIDE, FACE_SIDE],
        layers,
        classes: NUM_CLASSES,
    };
    // The exporter's own spelling of the architecture (its name, `same` rather than the
    // explicit padding it equals here), where it describes this very graph.
    let spec = match stored_spec {
        Some(stored) if same_computation(&stored, &spec, &layer_inputs) => stored,
        _ => spec,
    };
    let mut network = Network::new(spec, 0)?;
    for (index, layer_tensors) in tensors.into_iter().enumerate() {
        for (name, target) in network.layer_tensors_mut(index) {
            let (_, shape, values) = layer_tensors
                .iter()
                .find(|(n, _, _)| *n == name)
                .ok_or_else(|| FerError::Model(format!("layer {index} has no '{name}' tensor in the graph")))?;
            if shape.as_slice() != target.shape() {
                return Err(FerError::Model(format!(
                    "layer {index}'s {name} has shape {shape:?} in the graph; the layer needs {:?}",
                    target.shape()
                )));
            }
            *target = Tensor::from_shape_vec(target.raw_dim(), values.clone()).map_err(|e| FerError::Model(e.to_string()))?;
        }
    }
    // The graph is what runs: its scaling of the class scores, whatever the metadata says.
    let metadata = ModelMetadata { temperature, ..ModelMetadata::from_map(metadata) };
    LoadedModel::new(network, stored, metadata)
}

/// The version of the default operator set the model imports.
fn default_opset(model: &ModelProto) -> Result<i64> {
    let version = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| FerError::Model("the ONNX model imports no version of the default operator set".into()))?;
    if !OPSETS.contains(&version) {
        return Err(FerError::Model(format!(
            "the ONNX model uses operator set {version}; this importer reads {} to {}: export with an opset in that range",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    Ok(version)
}

/// Whether `stored` describes the network `built` was read as: the same layers, where a
/// convolution's padding may be spelled differently but must pad its input (`inputs[i]`)
/// the same way.
fn same_computation(stored: &ModelSpec, built: &ModelSpec, inputs: &[Vec<usize>]) -> bool {
    stored.input == built.input
        && stored.classes == built.classes
        && stored.layers.len() == built.layers.len()
        && stored.layers.iter().zip(&built.layers).zip(inputs).all(|((a, b), input)| match (a, b) {
            (
                LayerSpec::Conv2d { filters, kernel, stride, padding, groups },
                LayerSpec::Conv2d { filters: f, kernel: k, stride: s, padding: p, groups: g },
            ) if (filters, kernel, stride, groups) == (f, k, s, g) => {
                input.len() == 3 && input[1..].iter().all(|&n| explicit_pads(*padding, n, *kernel, *stride) == explicit_pads(*p, n, *k, *s))
            }
            _ => a == b,
        })
}

/// One layer's tensors: name, shape, values.
type LayerTensors = Vec<(&'static str, Vec<usize>, Vec<f32>)>;

/// The walk along the chain: what has been read so far.
struct Walk<'a> {
    opset: i64,
    /// The batch size the graph's input declares, when it is fixed (PyTorch's exporter fixes
    /// the example's): a Reshape may then spell the batch axis with it.
    fixed_batch: Option<i64>,
    /// Initializers and Constant nodes' values by name.
    constants: HashMap<&'a str, &'a TensorProto>,
    /// The value the next node must read: the previous node's output.
    current: &'a str,
    /// The per-face shape of `current` as this engine's layers see it.
    shape: Vec<usize>,
    /// After GlobalAveragePool (or ReduceMean keeping its axes): ONNX's value is `[c, 1, 1]`
    /// where this engine's is `[c]`, until a Flatten or Reshape drops the unit axes.
    unit_axes: bool,
    /// The pixel → input mapping `a·p + b` of the scalar operators before the first layer.
    scaling: (f64, f64),
    layers: Vec<LayerSpec>,
    layer_inputs: Vec<Vec<usize>>,
    tensors: Vec<LayerTensors>,
    /// The layer a MatMul just made, whose bias the next Add may give.
    matmul: Option<usize>,
    softmax_done: bool,
    /// What a Div of the class scores by a scalar (or a Mul by its inverse) divides them by.
    temperature: Option<f32>,
    stored: StoredDtype,
}

impl<'a> Walk<'a> {
    fn new(graph: &'a GraphProto, opset: i64) -> Result<Walk<'a>> {
        let mut constants = HashMap::new();
        for tensor in &graph.initializer {
            constants.insert(tensor.name.as_deref().unwrap_or(""), tensor);
        }
        // Older exporters list the initializers among the inputs too.
        let inputs: Vec<_> = graph.input.iter().filter(|v| !constants.contains_key(v.name.as_deref().unwrap_or(""))).collect();
        let input = match inputs.as_slice() {
            [input] => input,
            _ => {
                let names: Vec<&str> = inputs.iter().map(|v| v.name.as_deref().unwrap_or("")).collect();
                return Err(FerError::Model(format!(
                    "the graph has {} inputs ({}); a face model reads one, [N, 1, 48, 48] grey values 0-255",
                    names.len(),
                    names.join(", ")
                )));
            }
        };
        let name = input.name.as_deref().unwrap_or("");
        let mut fixed_batch = None;
        if let Some(tensor_type) = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()) {
            if let Some(elem_type) = tensor_type.elem_type.filter(|&t| t != data_type::FLOAT) {
                return Err(FerError::Model(format!(
                    "the graph's input '{name}' has ONNX element type {elem_type}; pixels are float32 (1)"
                )));
            }
            if let Some(shape) = &tensor_type.shape {
                let expected = [None, Some(1), Some(FACE_SIDE as i64), Some(FACE_SIDE as i64)];
                let fits = shape.dim.len() == 4
                    && shape.dim.iter().zip(expected).all(|(dim, want)| want.is_none() || dim.dim_value.is_none() || dim.dim_value == want);
                if !fits {
                    let dims: Vec<String> = shape
                        .dim
                        .iter()
                        .map(|d| d.dim_value.map(|v| v.to_string()).or_else(|| d.dim_param.clone()).unwrap_or_else(|| "?".into()))
                        .collect();
                    return Err(FerError::Model(format!(
                        "the graph's input '{name}' has shape [{}]; faces here are [N, 1, 48, 48]",
                        dims.join(", ")
                    )));
                }
                fixed_batch = shape.dim.first().and_then(|d| d.dim_value).filter(|&n| n > 0);
            }
        }
        Ok(Walk {
            opset,
            fixed_batch,
            constants,
            current: name,
            shape: vec![1, FACE_SIDE, FACE_SIDE],
            unit_axes: false,
            scaling: (1.0, 0.0),
            layers: Vec::new(),
            layer_inputs: Vec::new(),
            tensors: Vec::new(),
            matmul: None,
            softmax_done: false,
            temperature: None,
            stored: StoredDtype::F32,
        })
    }

    fn node(&mut self, proto: &'a NodeProto) -> Result<()> {
        let node = Node::new(proto);
        if !matches!(proto.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            return Err(node.error(&format!(
                "operator '{}' of domain '{}' is not supported: only the default ONNX domain is",
                node.op,
                proto.domain.as_deref().unwrap_or("")
            )));
        }
        if node.op == "Constant" {
            node.only_attributes(&["value"])?;
            let value =
                node.attribute("value").and_then(|a| a.t.as_ref()).ok_or_else(|| node.error("only a tensor 'value' is supported"))?;
            self.constants.insert(node.output(0)?, value);
            return Ok(());
        }
        if node.op == "Identity" && node.input(0).is_some_and(|i| self.constants.contains_key(i)) {
            let value = self.constant(&node, 0)?;
            self.constants.insert(node.output(0)?, value);
            return Ok(());
        }
        if self.softmax_done {
            return Err(node.error("comes after the Softmax; the Softmax must be the graph's last operator"));
        }
        if self.temperature.is_some() && !matches!(node.op, "Softmax" | "Identity") {
            return Err(node.error("comes after the class scores were scaled; only a Softmax may follow that scaling"));
        }
        let before_first_layer = self.layers.is_empty();
        if before_first_layer && matches!(node.op, "Sub" | "Div" | "Mul" | "Add") {
            return self.scale_input(&node);
        }
        if !LAYER_OPERATORS.contains(&node.op) {
            return Err(node.error(&format!("operator '{}' is not supported; this engine's layers cover {SUPPORTED}", node.op)));
        }
        if before_first_layer && node.op != "Identity" {
            self.check_scaling(&node)?;
        }
        if self.layers.len() >= MAX_LAYERS {
            return Err(node.error(&format!("the graph has more than {MAX_LAYERS} layers")));
        }
        // Add commutes: a MatMul's bias may come first.
        let data_index = usize::from(node.op == "Add" && node.input(1) == Some(self.current));
        let data_input = node.input(data_index).unwrap_or("");
        if data_input != self.current {
            return Err(node.error(&format!(
                "reads '{data_input}' where the previous operator's output '{}' was expected: only a chain of layers is supported",
                self.current
            )));
        }
        let matmul = self.matmul.take();
        match node.op {
            "Identity" => node.only_attributes(&[])?,
            "Conv" => self.conv(&node)?,
            "BatchNormalization" => self.batch_norm(&node)?,
            "Relu" => {
                node.only_attributes(&[])?;
                self.push(LayerSpec::Relu, self.shape.clone(), Vec::new());
            }
            "MaxPool" | "AveragePool" => self.pool(&node)?,
            "GlobalAveragePool" => {
                node.only_attributes(&[])?;
                let [c, _, _] = self.image(&node)?;
                self.push(LayerSpec::GlobalAvgPool, vec![c], Vec::new());
                self.unit_axes = true;
            }
            "ReduceMean" => self.reduce_mean(&node)?,
            "Flatten" => {
                node.only_attributes(&["axis"])?;
                let rank = 1 + self.shape.len() as i64 + if self.unit_axes { 2 } else { 0 };
                let axis = node.int("axis", 1)?;
                if axis != 1 && axis != 1 - rank {
                    return Err(node.error(&format!("flattens from axis {axis}; only axis 1 (everything but the batch) is supported")));
                }
                self.flatten();
            }
            "Reshape" => self.reshape(&node)?,
            "Gemm" => self.gemm(&node)?,
            "MatMul" => self.matmul(&node)?,
            "Add" => match matmul {
                Some(layer) => self.matmul_bias(&node, layer)?,
                None => {
                    return Err(node.error("an Add is supported only as the bias of a MatMul, or as input scaling before the first layer"))
                }
            },
            "Dropout" => self.dropout(&node)?,
            "Div" | "Mul" if self.shape == [NUM_CLASSES] && !self.unit_axes => self.scale_class_scores(&node)?,
            "Softmax" => {
                node.only_attributes(&["axis"])?;
                let axis = node.int("axis", if self.opset >= 13 { -1 } else { 1 })?;
                if self.shape.len() != 1 || self.unit_axes || !(axis == 1 || axis == -1) {
                    return Err(node.error("only a Softmax over the classes of [N, classes] is supported"));
                }
                // The engine's predictions apply the softmax to the logits the network outputs.
                self.softmax_done = true;
            }
            _ => return Err(node.error(&format!("a {} is supported only as input scaling before the first layer", node.op))),
        }
        self.current = node.output(0)?;
        if node.op == "MatMul" {
            self.matmul = Some(self.layers.len() - 1);
        }
        Ok(())
    }

    /// The graph's output must be the chain's last value, and the last layer must score the classes.
    fn finish(self, graph: &GraphProto) -> Result<Walk<'a>> {
        match graph.output.as_slice() {
            [output] if output.name.as_deref() == Some(self.current) => {}
            outputs => {
                let names: Vec<&str> = outputs.iter().map(|o| o.name.as_deref().unwrap_or("")).collect();
                return Err(FerError::Model(format!(
                    "the graph's outputs ({}) are not the last operator's output '{}': it must have one output, the class scores",
                    names.join(", "),
                    self.current
                )));
            }
        }
        if self.layers.is_empty() {
            return Err(FerError::Model("the graph has no layers".into()));
        }
        if self.shape != [NUM_CLASSES] || self.unit_axes {
            return Err(FerError::Model(format!(
                "the graph outputs {:?} values per face; models here score the {NUM_CLASSES} FER2013 expressions",
                self.shape
            )));
        }
        Ok(self)
    }

    fn push(&mut self, layer: LayerSpec, output: Vec<usize>, tensors: LayerTensors) {
        self.layers.push(layer);
        self.layer_inputs.push(std::mem::replace(&mut self.shape, output));
        self.tensors.push(tensors);
    }

    /// Sub, Div, Mul or Add by a scalar constant, before the first layer: composed into `scaling`.
    fn scale_input(&mut self, node: &Node<'a>) -> Result<()> {
        node.only_attributes(&[])?;
        let constant = match (node.input(0), node.input(1)) {
            (Some(a), Some(b)) if a == self.current => b,
            // Add and Mul commute.
            (Some(a), Some(b)) if b == self.current && matches!(node.op, "Add" | "Mul") => a,
            _ => return Err(node.error(&format!("must read the input value '{}' and a scalar constant", self.current))),
        };
        let tensor = self.constants.get(constant).ok_or_else(|| node.error(&format!("'{constant}' is not a constant")))?;
        let (dims, values) = self.floats(node, tensor)?;
        let &[c] = values.as_slice() else {
            return Err(node.error(&format!("scales the input by a tensor of shape {dims:?}; only a scalar is supported")));
        };
        let c = c as f64;
        let (a, b) = self.scaling;
        self.scaling = match node.op {
            "Sub" => (a, b - c),
            "Add" => (a, b + c),
            "Mul" => (a * c, b * c),
            _ if c == 0.0 => return Err(node.error("divides by zero")),
            _ => (a / c, b / c),
        };
        self.current = node.output(0)?;
        Ok(())
    }

    /// The class scores divided by a positive scalar (or multiplied by its inverse): the
    /// temperature the engine divides the logits by before the softmax.
    fn scale_class_scores(&mut self, node: &Node<'a>) -> Result<()> {
        node.only_attributes(&[])?;
        let tensor = self.constant(node, 1)?;
        let (dims, values) = self.floats(node, tensor)?;
        let &[c] = values.as_slice() else {
            return Err(node.error(&format!("scales the class scores by a tensor of shape {dims:?}; only a scalar is supported")));
        };
        let temperature = if node.op == "Div" { c } else { 1.0 / c };
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(node.error(&format!("scales the class scores by {c}; only a positive scalar (a temperature) is supported")));
        }
        self.temperature = Some(temperature);
        Ok(())
    }

    /// Before the first layer: the scalar operators so far must map pixels as the engine does.
    fn check_scaling(&self, node: &Node) -> Result<()> {
        let (a, b) = self.scaling;
        let (want_a, want_b) = (normalize_pixel(1.0) as f64 - normalize_pixel(0.0) as f64, normalize_pixel(0.0) as f64);
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * y.abs();
        if close(a, want_a) && close(b, want_b) {
            return Ok(());
        }
        Err(FerError::Model(format!(
            "the graph feeds its first layer ({}) {a}·p + {b} of each pixel value p (0-255); this engine feeds (p - 128) / 64. \
             Export a graph that reads 0-255 pixels and starts with that scaling (in PyTorch: `x = (pixels - 128) / 64` \
             at the start of forward), trained on inputs scaled so",
            node.label
        )))
    }

    fn constant(&self, node: &Node, index: usize) -> Result<&'a TensorProto> {
        let name = node.input(index).ok_or_else(|| node.error(&format!("has no input {index}")))?;
        self.constants.get(name).copied().ok_or_else(|| node.error(&format!("input '{name}' must be a constant (an initializer)")))
    }

    /// An optional constant input: `None` when the node leaves it out.
    fn optional_constant(&self, node: &Node, index: usize) -> Result<Option<&'a TensorProto>> {
        node.input(index).map(|_| self.constant(node, index)).transpose()
    }

    /// The float values of a constant, as f32 (FLOAT or FLOAT16 tensors).
    fn floats(&mut self, node: &Node, tensor: &TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dims, count) = dims_and_count(node, tensor)?;
        let raw = tensor.raw_data.as_deref().filter(|r| !r.is_empty());
        let values: Vec<f32> = match (tensor.data_type, raw) {
            (Some(data_type::FLOAT), Some(raw)) if raw.len() == count * 4 => {
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            (Some(data_type::FLOAT), None) if tensor.float_data.len() == count => tensor.float_data.clone(),
            (Some(data_type::FLOAT16), Some(raw)) if raw.len() == count * 2 => {
                self.stored = StoredDtype::F16;
                raw.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            (Some(data_type::FLOAT16), None) if tensor.int32_data.len() == count => {
                self.stored = StoredDtype::F16;
                tensor.int32_data.iter().map(|&bits| f16::from_bits(bits as u16).to_f32()).collect()
            }
            (Some(data_type::FLOAT | data_type::FLOAT16), _) => {
                return Err(node.error(&format!("tensor '{}' holds fewer or more values than its shape {dims:?}", tensor_name(tensor))));
            }
            (other, _) => {
                return Err(node.error(&format!(
                    "tensor '{}' has ONNX element type {}; weights must be float32 (1) or float16 (10)",
                    tensor_name(tensor),
                    other.unwrap_or(0)
                )));
            }
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(node.error(&format!("tensor '{}' holds NaN or infinite values", tensor_name(tensor))));
        }
        Ok((dims, values))
    }

    /// A constant that must have exactly `shape`.
    fn floats_of_shape(&mut self, node: &Node, tensor: &TensorProto, what: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (dims, values) = self.floats(node, tensor)?;
        if dims != shape {
            return Err(node.error(&format!("its {what} has shape {dims:?}; expected {shape:?}")));
        }
        Ok(values)
    }

    /// The current value as an image `[c, h, w]`.
    fn image(&self, node: &Node) -> Result<[usize; 3]> {
        match self.shape.as_slice() {
            &[c, h, w] if !self.unit_axes => Ok([c, h, w]),
            _ => Err(node.error(&format!("needs an image [N, c, h, w], but reads a value of shape [N, {:?}]", self.shape))),
        }
    }

    /// The current value as features `[n]`.
    fn features(&self, node: &Node) -> Result<usize> {
        match self.shape.as_slice() {
            &[n] if !self.unit_axes => Ok(n),
            _ => Err(node.error(&format!("needs [N, features] (add a Flatten first), but reads [N, {:?}]", self.shape))),
        }
    }

    fn flatten(&mut self) {
        if std::mem::take(&mut self.unit_axes) {
            // GlobalAveragePool's unit axes: this engine's layer has dropped them already.
            return;
        }
        let features = self.shape.iter().product();
        self.push(LayerSpec::Flatten, vec![features], Vec::new());
    }

    fn conv(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])?;
        let [channels, h, w] = self.image(node)?;
        let weight = self.constant(node, 1)?;
        let (dims, _) = dims_and_count(node, weight)?;
        let &[filters, per_group, kernel, kernel_w] = dims.as_slice() else {
            return Err(node.error(&format!("has a weight of shape {dims:?}; a 2-D convolution's is [filters, channels / groups, k, k]")));
        };
        let groups = usize_attribute(node, node.int("group", 1)?)?;
        if kernel != kernel_w || kernel == 0 {
            return Err(node.error(&format!("has a {kernel}x{kernel_w} kernel; only square kernels are supported")));
        }
        if groups == 0 || !channels.is_multiple_of(groups) || per_group != channels / groups || !filters.is_multiple_of(groups) {
            return Err(node.error(&format!("its weight {dims:?} and {groups} groups do not fit an input of {channels} channels")));
        }
        let stride = square(node, "strides", node.ints("strides").unwrap_or(&[1, 1]))?;
        if node.ints("kernel_shape").is_some_and(|k| k != [kernel as i64, kernel as i64]) {
            return Err(node.error("its kernel_shape differs from its weight's"));
        }
        if node.ints("dilations").is_some_and(|d| d.iter().any(|&d| d != 1)) {
            return Err(node.error("dilated convolutions are not supported"));
        }
        let same = |lower: bool| {
            [h, w].map(|n| {
                let (before, after) = explicit_pads(Padding::Same, n, kernel, stride);
                if lower {
                    (after, before)
                } else {
                    (before, after)
                }
            })
        };
        let [(top, bottom), (left, right)] = match node.string("auto_pad", "NOTSET")?.as_str() {
            "NOTSET" => match node.ints("pads") {
                None => [(0, 0), (0, 0)],
                Some(&[t, l, b, r]) => {
                    let [t, l, b, r] = [t, l, b, r].map(|p| usize::try_from(p).ok().filter(|&p| p <= MAX_PAD));
                    match (t, l, b, r) {
                        (Some(t), Some(l), Some(b), Some(r)) => [(t, b), (l, r)],
                        _ => return Err(node.error(&format!("has pads outside 0 to {MAX_PAD}"))),
                    }
                }
                Some(other) => return Err(node.error(&format!("has pads {other:?}; a 2-D convolution has four"))),
            },
            "VALID" => [(0, 0), (0, 0)],
            "SAME_UPPER" => same(false),
            "SAME_LOWER" => same(true),
            other => return Err(node.error(&format!("auto_pad '{other}' is not an ONNX padding mode"))),
        };
        // This engine pads as TensorFlow's SAME does, or equally on every side.
        let padding = if [(top, bottom), (left, right)] == same(false) {
            Padding::Same
        } else if top == bottom && left == right && top == left {
            if top == 0 {
                Padding::Valid
            } else {
                Padding::Explicit(top)
            }
        } else {
            return Err(node.error(&format!(
                "pads [{top}, {left}, {bottom}, {right}] (top, left, bottom, right) are not supported: only equal pads on \
                 every side, or TensorFlow's SAME split (the extra row and column at the bottom and right)"
            )));
        };
        let (Some(out_h), Some(out_w)) = (window_output(h, top, bottom, kernel, stride), window_output(w, left, right, kernel, stride))
        else {
            return Err(node.error(&format!("its {kernel}x{kernel} kernel does not fit its padded input {h}x{w}")));
        };
        let weight_values = self.floats_of_shape(node, weight, "weight", &dims)?;
        let bias = match self.optional_constant(node, 2)? {
            Some(bias) => self.floats_of_shape(node, bias, "bias", &[filters])?,
            None => vec![0.0; filters],
        };
        let spec = LayerSpec::Conv2d { filters, kernel, stride, padding, groups };
        // Bounds every later shape too: no layer makes its output larger than a convolution can.
        checked_size(&[filters, out_h, out_w]).map_err(|e| node.error(&e.to_string()))?;
        self.push(spec, vec![filters, out_h, out_w], vec![("weight", dims, weight_values), ("bias", vec![filters], bias)]);
        Ok(())
    }

    fn batch_norm(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&["epsilon", "momentum", "spatial", "training_mode"])?;
        if node.int("training_mode", 0)? != 0 || node.int("spatial", 1)? != 1 || node.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(node.error("only inference-mode, per-channel batch normalisation (one output) is supported"));
        }
        let channels = match self.shape.as_slice() {
            [c] | [c, _, _] => *c,
            _ => return Err(node.error(&format!("reads [N, {:?}]; batch normalisation needs [N, c, h, w] or [N, features]", self.shape))),
        };
        let mut inputs = Vec::with_capacity(4);
        for (index, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
            let tensor = self.constant(node, index)?;
            inputs.push(self.floats_of_shape(node, tensor, what, &[channels])?);
        }
        let epsilon = node.float("epsilon", 1e-5)? as f64;
        // This engine adds BATCH_NORM_EPSILON: the variance absorbs the difference.
        let mut variance = inputs.pop().unwrap_or_default();
        for v in &mut variance {
            let adjusted = *v as f64 + epsilon - BATCH_NORM_EPSILON as f64;
            if adjusted < 0.0 {
                return Err(node.error(&format!(
                    "its epsilon {epsilon} with a variance of {v} cannot be expressed with this engine's epsilon {BATCH_NORM_EPSILON}"
                )));
            }
            *v = adjusted as f32;
        }
        let [gamma, beta, mean]: [Vec<f32>; 3] = inputs.try_into().map_err(|_| node.error("needs five inputs"))?;
        let shape = vec![channels];
        let tensors = vec![
            ("gamma", shape.clone(), gamma),
            ("beta", shape.clone(), beta),
            ("running_mean", shape.clone(), mean),
            ("running_var", shape, variance),
        ];
        self.push(LayerSpec::BatchNorm, self.shape.clone(), tensors);
        Ok(())
    }

    fn pool(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ])?;
        if node.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(node.error("MaxPool's Indices output is not supported"));
        }
        let [c, h, w] = self.image(node)?;
        let window = square(node, "kernel_shape", node.ints("kernel_shape").ok_or_else(|| node.error("has no kernel_shape"))?)?;
        let stride = square(node, "strides", node.ints("strides").unwrap_or(&[1, 1]))?;
        if node.ints("pads").is_some_and(|p| p.iter().any(|&p| p != 0))
            || !matches!(node.string("auto_pad", "NOTSET")?.as_str(), "NOTSET" | "VALID")
        {
            return Err(node.error("padded pooling is not supported"));
        }
        if node.ints("dilations").is_some_and(|d| d.iter().any(|&d| d != 1)) {
            return Err(node.error("dilated pooling is not supported"));
        }
        let (Some(out_h), Some(out_w)) = (window_output(h, 0, 0, window, stride), window_output(w, 0, 0, window, stride)) else {
            return Err(node.error(&format!("its {window}x{window} window is larger than its input {h}x{w}")));
        };
        // This engine leaves out a window that would run past the edge (floor mode); ceil mode
        // gives the same output where the windows fit exactly.
        if node.int("ceil_mode", 0)? != 0 && ((h - window) % stride != 0 || (w - window) % stride != 0) {
            return Err(node.error("ceil_mode 1 (a last window past the edge) is not supported"));
        }
        let spec = if node.op == "MaxPool" { LayerSpec::MaxPool { window, stride } } else { LayerSpec::AvgPool { window, stride } };
        self.push(spec, vec![c, out_h, out_w], Vec::new());
        Ok(())
    }

    /// ReduceMean over height and width: global average pooling (PyTorch 2.x's exporter writes
    /// `AdaptiveAvgPool2d(1)` and `x.mean((2, 3))` so). The axes are an input from opset 18,
    /// an attribute before.
    fn reduce_mean(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&["axes", "keepdims", "noop_with_empty_axes"])?;
        let [c, _, _] = self.image(node)?;
        let axes = match (self.opset >= 18, node.ints("axes")) {
            (false, _) if node.input(1).is_some() => {
                return Err(node.error("has a second input; before opset 18 the axes are an attribute"))
            }
            (false, Some(axes)) => axes.to_vec(),
            (false, None) => Vec::new(),
            (true, Some(_)) => return Err(node.error("has an 'axes' attribute; from opset 18 the axes are its second input")),
            (true, None) => match self.optional_constant(node, 1)? {
                Some(tensor) => {
                    let (_, count) = dims_and_count(node, tensor)?;
                    int64_values(node, tensor, count)?
                }
                None => Vec::new(),
            },
        };
        if axes.is_empty() {
            let what = if node.int("noop_with_empty_axes", 0)? != 0 { "does nothing" } else { "averages every axis, the batch too" };
            return Err(node.error(&format!("{what}; only the mean over height and width (axes [2, 3]) is supported")));
        }
        let mut spatial: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
        spatial.sort_unstable();
        if spatial != [2, 3] {
            return Err(node.error(&format!(
                "averages over axes {axes:?} of [N, c, h, w]; only the mean over height and width (axes [2, 3] or [-2, -1], \
                 global average pooling) is supported"
            )));
        }
        self.push(LayerSpec::GlobalAvgPool, vec![c], Vec::new());
        self.unit_axes = node.int("keepdims", 1)? != 0;
        Ok(())
    }

    /// Reshape to `[N, features]` (as Flatten), the target shape a constant.
    fn reshape(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&["allowzero"])?;
        let shape = self.constant(node, 1)?;
        let (_, count) = dims_and_count(node, shape)?;
        let target = int64_values(node, shape, count)?;
        let features = self.shape.iter().product::<usize>() as i64;
        let allow_zero = node.int("allowzero", 0)? != 0;
        // The graph's own fixed batch size says "the batch" too: the engine runs any batch.
        let batch_kept = |d: i64| d == -1 || (d == 0 && !allow_zero) || Some(d) == self.fixed_batch;
        let flat = match target.as_slice() {
            &[batch, f] => batch_kept(batch) && (f == features || (f == -1 && batch != -1)),
            _ => false,
        };
        if !flat {
            return Err(node.error(&format!(
                "reshapes to {target:?}; only [N, features] (as Flatten) is supported, written [-1, {features}], [0, -1] or \
                 [0, {features}] (or with the batch size the graph's input fixes)"
            )));
        }
        self.flatten();
        Ok(())
    }

    fn gemm(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&["alpha", "beta", "transA", "transB"])?;
        let inputs = self.features(node)?;
        if node.int("transA", 0)? != 0 {
            return Err(node.error("transA is not supported: the input is [N, features]"));
        }
        let transposed = node.int("transB", 0)? != 0;
        let (alpha, beta) = (node.float("alpha", 1.0)?, node.float("beta", 1.0)?);
        let weight = self.constant(node, 1)?;
        let (dims, values) = self.floats(node, weight)?;
        let units = match (dims.as_slice(), transposed) {
            (&[units, n], true) | (&[n, units], false) if n == inputs => units,
            _ => return Err(node.error(&format!("its weight {dims:?} does not fit {inputs} input features"))),
        };
        let mut weight = if transposed { values } else { transpose(&values, inputs, units) };
        if alpha != 1.0 {
            weight.iter_mut().for_each(|v| *v *= alpha);
        }
        let mut bias = match self.optional_constant(node, 2)? {
            Some(tensor) => self.bias(node, tensor, units)?,
            None => vec![0.0; units],
        };
        if beta != 1.0 {
            bias.iter_mut().for_each(|v| *v *= beta);
        }
        self.dense(node, inputs, units, weight, bias)
    }

    fn matmul(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&[])?;
        let inputs = self.features(node)?;
        let weight = self.constant(node, 1)?;
        let (dims, values) = self.floats(node, weight)?;
        let &[n, units] = dims.as_slice() else {
            return Err(node.error(&format!("its weight {dims:?} is not a matrix")));
        };
        if n != inputs {
            return Err(node.error(&format!("its weight {dims:?} does not fit {inputs} input features")));
        }
        self.dense(node, inputs, units, transpose(&values, inputs, units), vec![0.0; units])
    }

    fn dense(&mut self, node: &Node, inputs: usize, units: usize, weight: Vec<f32>, bias: Vec<f32>) -> Result<()> {
        if units == 0 {
            return Err(node.error("has no outputs"));
        }
        let tensors = vec![("weight", vec![units, inputs], weight), ("bias", vec![units], bias)];
        self.push(LayerSpec::Dense { units }, vec![units], tensors);
        Ok(())
    }

    /// A MatMul's following Add: the constant is the dense layer's bias.
    fn matmul_bias(&mut self, node: &Node, layer: usize) -> Result<()> {
        node.only_attributes(&[])?;
        let constant_index = if node.input(0) == Some(self.current) { 1 } else { 0 };
        let tensor = self.constant(node, constant_index)?;
        let LayerSpec::Dense { units } = self.layers[layer] else {
            return Err(node.error("follows a MatMul that made no dense layer"));
        };
        let bias = self.bias(node, tensor, units)?;
        if let Some((_, _, values)) = self.tensors[layer].iter_mut().find(|(name, _, _)| *name == "bias") {
            *values = bias;
        }
        Ok(())
    }

    /// A dense layer's bias: `[units]`, `[1, units]`, or one value for every unit.
    fn bias(&mut self, node: &Node, tensor: &TensorProto, units: usize) -> Result<Vec<f32>> {
        let (dims, values) = self.floats(node, tensor)?;
        match (dims.as_slice(), values.len()) {
            ([n] | [1, n], _) if *n == units => Ok(values),
            (_, 1) => Ok(vec![values[0]; units]),
            _ => Err(node.error(&format!("its bias has shape {dims:?}; expected [{units}]"))),
        }
    }

    fn dropout(&mut self, node: &Node) -> Result<()> {
        node.only_attributes(&["ratio", "seed"])?;
        if node.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(node.error("Dropout's mask output is not supported"));
        }
        let rate = if self.opset >= 12 {
            match self.optional_constant(node, 1)? {
                Some(tensor) => match self.floats(node, tensor)?.1.as_slice() {
                    &[rate] => rate,
                    _ => return Err(node.error("its ratio must be one value")),
                },
                None => 0.5,
            }
        } else {
            node.float("ratio", 0.5)?
        };
        if let Some(training) = self.optional_constant(node, 2)? {
            let (_, count) = dims_and_count(node, training)?;
            let on = match (training.raw_data.as_deref(), training.int32_data.as_slice()) {
                (Some(raw), _) if raw.len() == count => raw.iter().any(|&b| b != 0),
                (_, values) if values.len() == count => values.iter().any(|&v| v != 0),
                _ => return Err(node.error("its training_mode is not one boolean")),
            };
            if on {
                return Err(node.error("training-mode dropout is not supported"));
            }
        }
        if !(0.0..1.0).contains(&rate) {
            return Err(node.error(&format!("its ratio {rate} is outside [0, 1)")));
        }
        self.push(LayerSpec::Dropout { rate }, self.shape.clone(), Vec::new());
        Ok(())
    }
}

/// The most zeros on one side of a convolution's input.
const MAX_PAD: usize = 1 << 16;

/// A node with its label for messages: `node 'name' (Op)`.
struct Node<'a> {
    proto: &'a NodeProto,
    op: &'a str,
    label: String,
}

impl<'a> Node<'a> {
    fn new(proto: &'a NodeProto) -> Node<'a> {
        let op = proto.op_type.as_deref().unwrap_or("");
        let label = match proto.name.as_deref() {
            Some(name) if !name.is_empty() => format!("ONNX node '{name}' ({op})"),
            _ => format!("ONNX {op} node"),
        };
        Node { proto, op, label }
    }

    fn error(&self, message: &str) -> FerError {
        FerError::Model(format!("{}: {message}", self.label))
    }

    /// Input `index`, unless absent or left empty (ONNX's way of skipping an optional input).
    fn input(&self, index: usize) -> Option<&'a str> {
        self.proto.input.get(index).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn output(&self, index: usize) -> Result<&'a str> {
        self.proto.output.get(index).map(String::as_str).filter(|s| !s.is_empty()).ok_or_else(|| self.error("has no output"))
    }

    fn attribute(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }

    /// Refuses attributes outside `known`: one this importer ignored could change the result.
    fn only_attributes(&self, known: &[&str]) -> Result<()> {
        match self.proto.attribute.iter().find(|a| !known.contains(&a.name.as_deref().unwrap_or(""))) {
            Some(unknown) => Err(self.error(&format!("attribute '{}' is not supported", unknown.name.as_deref().unwrap_or("")))),
            None => Ok(()),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attribute(name) {
            None => Ok(default),
            Some(a) => a.i.ok_or_else(|| self.error(&format!("attribute '{name}' is not an integer"))),
        }
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attribute(name) {
            None => Ok(default),
            Some(a) => a.f.filter(|f| f.is_finite()).ok_or_else(|| self.error(&format!("attribute '{name}' is not a finite float"))),
        }
    }

    fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.attribute(name) {
            None => Ok(default.into()),
            Some(a) => {
                a.s.as_deref()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .map(str::to_string)
                    .ok_or_else(|| self.error(&format!("attribute '{name}' is not a string")))
            }
        }
    }

    fn ints(&self, name: &str) -> Option<&'a [i64]> {
        self.attribute(name).map(|a| a.ints.as_slice())
    }
}

/// Two equal values (height and width), within limits.
fn square(node: &Node, what: &str, values: &[i64]) -> Result<usize> {
    match *values {
        [a, b] if a == b && a >= 1 && a <= MAX_PAD as i64 => Ok(a as usize),
        _ => Err(node.error(&format!("{what} {values:?} are not supported: only equal values from 1 to {MAX_PAD} for height and width"))),
    }
}

fn usize_attribute(node: &Node, value: i64) -> Result<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v <= MAX_LAYER_WEIGHTS)
        .ok_or_else(|| node.error(&format!("has an attribute value {value} out of range")))
}

fn tensor_name(tensor: &TensorProto) -> &str {
    tensor.name.as_deref().unwrap_or("")
}

/// A constant's shape and element count, refused past [`MAX_LAYER_WEIGHTS`] values. (External
/// data has been read into the graph before: `load_external_data`.)
fn dims_and_count(node: &Node, tensor: &TensorProto) -> Result<(Vec<usize>, usize)> {
    if tensor.dims.len() > 8 {
        return Err(node.error(&format!("tensor '{}' has {} axes", tensor_name(tensor), tensor.dims.len())));
    }
    let dims: Option<Vec<usize>> = tensor.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
    let dims = dims.ok_or_else(|| node.error(&format!("tensor '{}' has a negative size", tensor_name(tensor))))?;
    match dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(count) if count <= MAX_LAYER_WEIGHTS => Ok((dims, count)),
        _ => Err(node.error(&format!("tensor '{}' of shape {dims:?} holds more than {MAX_LAYER_WEIGHTS} values", tensor_name(tensor)))),
    }
}

/// The values of a small INT64 constant (a shape).
fn int64_values(node: &Node, tensor: &TensorProto, count: usize) -> Result<Vec<i64>> {
    if tensor.data_type != Some(data_type::INT64) || count > 8 {
        return Err(node.error(&format!("tensor '{}' is not a shape (a few int64 values)", tensor_name(tensor))));
    }
    match tensor.raw_data.as_deref().filter(|r| !r.is_empty()) {
        Some(raw) if raw.len() == count * 8 => {
            Ok(raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect())
        }
        None if tensor.int64_data.len() == count => Ok(tensor.int64_data.clone()),
        _ => Err(node.error(&format!("tensor '{}' holds fewer or more values than its shape", tensor_name(tensor)))),
    }
}

/// `[rows, columns]` → `[columns, rows]`, row-major.
fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..columns {
            out[c * rows + r] = values[r * columns + c];
        }
    }
    out
}

//! Network → ONNX graph: one node (or two) per layer, weights as initializers named as in a
//! safetensors file (`layers.{i}.weight`, ...), evaluation-mode semantics throughout.

use prost::Message;

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use super::{explicit_pads, window_output, INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME, SPEC_KEY};
use crate::engine::layers::BATCH_NORM_EPSILON;
use crate::engine::{LayerSpec, Network, Tensor};
use crate::models::metadata::ModelMetadata;
use crate::{FerError, Result};

/// The network as an ONNX model (opset 13): `pixels` `[N, 1, 48, 48]` (grey values 0–255) in,
/// `probabilities` `[N, 7]` out, with the input scaling, the temperature (when the network has
/// one) and the softmax inside the graph.
/// Batch-norm uses the running statistics; dropout is an inference-mode `Dropout` (the
/// identity), kept so that importing the file gives back the same layers. The weights are the
/// network's f32 values: a model loaded from an int8 or f16 file exports them dequantised.
/// `metadata` and the architecture go into `metadata_props`, under the keys a safetensors
/// file uses.
pub fn export_onnx(network: &Network, metadata: &ModelMetadata) -> Result<Vec<u8>> {
    let spec = network.spec();
    let mut graph = Graph::default();
    // (p − 128) / 64, as data::input::normalize_pixel computes it.
    graph.initializer("preprocess.mean", &[], &[128.0]);
    graph.initializer("preprocess.scale", &[], &[64.0]);
    graph.node("Sub", "preprocess.sub", &[INPUT_NAME, "preprocess.mean"], vec![]);
    let centred = graph.current.clone();
    graph.node("Div", "preprocess.div", &[&centred, "preprocess.scale"], vec![]);

    let mut shape: Vec<usize> = spec.input.to_vec();
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = |suffix: &str| format!("layers.{i}.{suffix}");
        let tensors = network.layer_tensors(i);
        let tensor = |wanted: &str| {
            tensors
                .iter()
                .find(|(n, _)| *n == wanted)
                .map(|(_, t)| *t)
                .ok_or_else(|| FerError::Model(format!("layer {i} ({layer:?}) has no tensor '{wanted}'")))
        };
        let with_tensors = |graph: &mut Graph, names: &[&str]| -> Result<Vec<String>> {
            names
                .iter()
                .map(|n| {
                    let full = name(n);
                    graph.tensor_initializer(&full, tensor(n)?);
                    Ok(full)
                })
                .collect()
        };
        let current = graph.current.clone();
        match *layer {
            LayerSpec::Conv2d { filters, kernel, stride, padding, groups } => {
                let &[_, h, w] = shape.as_slice() else { return Err(not_an_image(i, layer, &shape)) };
                let (top, bottom) = explicit_pads(padding, h, kernel, stride);
                let (left, right) = explicit_pads(padding, w, kernel, stride);
                let (Some(out_h), Some(out_w)) =
                    (window_output(h, top, bottom, kernel, stride), window_output(w, left, right, kernel, stride))
                else {
                    return Err(FerError::Model(format!("layer {i} ({layer:?}) does not fit its input {shape:?}")));
                };
                let weights = with_tensors(&mut graph, &["weight", "bias"])?;
                let attributes = vec![
                    ints("kernel_shape", &[kernel, kernel]),
                    ints("strides", &[stride, stride]),
                    ints("pads", &[top, left, bottom, right]),
                    int("group", groups as i64),
                ];
                graph.node("Conv", &name("conv"), &[&current, &weights[0], &weights[1]], attributes);
                shape = vec![filters, out_h, out_w];
            }
            LayerSpec::BatchNorm => {
                let weights = with_tensors(&mut graph, &["gamma", "beta", "running_mean", "running_var"])?;
                let inputs: Vec<&str> = std::iter::once(current.as_str()).chain(weights.iter().map(String::as_str)).collect();
                graph.node("BatchNormalization", &name("batch_norm"), &inputs, vec![float("epsilon", BATCH_NORM_EPSILON)]);
            }
            LayerSpec::Relu => graph.node("Relu", &name("relu"), &[&current], vec![]),
            LayerSpec::MaxPool { window, stride } | LayerSpec::AvgPool { window, stride } => {
                let &[c, h, w] = shape.as_slice() else { return Err(not_an_image(i, layer, &shape)) };
                let (Some(out_h), Some(out_w)) = (window_output(h, 0, 0, window, stride), window_output(w, 0, 0, window, stride)) else {
                    return Err(FerError::Model(format!("layer {i} ({layer:?}) does not fit its input {shape:?}")));
                };
                // Floor mode and no padding, as engine::layers::pool computes it: a window that
                // would run past the edge is left out, in ONNX as here.
                let attributes = vec![ints("kernel_shape", &[window, window]), ints("strides", &[stride, stride])];
                let op = if matches!(layer, LayerSpec::MaxPool { .. }) { "MaxPool" } else { "AveragePool" };
                graph.node(op, &name("pool"), &[&current], attributes);
                shape = vec![c, out_h, out_w];
            }
            LayerSpec::GlobalAvgPool => {
                let &[c, _, _] = shape.as_slice() else { return Err(not_an_image(i, layer, &shape)) };
                // ONNX keeps the 1x1 spatial axes, which this engine's layer drops.
                graph.node("GlobalAveragePool", &name("pool"), &[&current], vec![]);
                let pooled = graph.current.clone();
                graph.node("Flatten", &name("squeeze"), &[&pooled], vec![int("axis", 1)]);
                shape = vec![c];
            }
            LayerSpec::Flatten => {
                graph.node("Flatten", &name("flatten"), &[&current], vec![int("axis", 1)]);
                shape = vec![shape.iter().product()];
            }
            LayerSpec::Dropout { rate } => {
                let ratio = name("ratio");
                graph.initializer(&ratio, &[], &[rate]);
                graph.node("Dropout", &name("dropout"), &[&current, &ratio], vec![]);
            }
            LayerSpec::Dense { units } => {
                let weights = with_tensors(&mut graph, &["weight", "bias"])?;
                // weight is [units, inputs]: y = x · weightᵀ + bias.
                graph.node("Gemm", &name("dense"), &[&current, &weights[0], &weights[1]], vec![int("transB", 1)]);
                shape = vec![units];
            }
        }
    }
    if network.temperature() != 1.0 {
        graph.initializer("temperature", &[], &[network.temperature()]);
        let logits = graph.current.clone();
        graph.node("Div", "temperature", &[&logits, "temperature"], vec![]);
    }
    let logits = graph.current.clone();
    graph.nodes.push(NodeProto {
        input: vec![logits],
        output: vec![OUTPUT_NAME.into()],
        name: Some("softmax".into()),
        op_type: Some("Softmax".into()),
        attribute: vec![int("axis", 1)],
        ..NodeProto::default()
    });

    let mut props: Vec<(String, String)> = metadata.to_map().into_iter().collect();
    props.push((SPEC_KEY.into(), serde_json::to_string(spec).map_err(|e| FerError::Model(e.to_string()))?));
    props.sort();
    let input = spec.input.map(|d| Some(d as i64));
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("fer-cnn".into()),
        producer_version: Some(crate::version().into()),
        doc_string: Some(format!(
            "FER2013 facial expressions ({}): {INPUT_NAME} [N, 1, 48, 48] grey values 0-255 in, {OUTPUT_NAME} [N, 7] out \
             (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral)",
            spec.name
        )),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: Some(spec.name.clone()),
            initializer: graph.initializers,
            doc_string: None,
            input: vec![value_info(INPUT_NAME, &[None, input[0], input[1], input[2]])],
            output: vec![value_info(OUTPUT_NAME, &[None, Some(spec.classes as i64)])],
        }),
        metadata_props: props.into_iter().map(|(k, v)| StringStringEntryProto { key: Some(k), value: Some(v) }).collect(),
    };
    Ok(model.encode_to_vec())
}

fn not_an_image(i: usize, layer: &LayerSpec, shape: &[usize]) -> FerError {
    FerError::Model(format!("layer {i} ({layer:?}) needs an image input [c, h, w], got {shape:?}"))
}

/// The nodes and initializers so far, and the name of the value the last node produced.
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    current: String,
}

impl Default for Graph {
    fn default() -> Graph {
        Graph { nodes: Vec::new(), initializers: Vec::new(), current: INPUT_NAME.into() }
    }
}

impl Graph {
    /// Appends a node with one output, named after the node, which becomes the current value.
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) {
        let output = format!("{name}.out");
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name.into()),
            op_type: Some(op.into()),
            domain: None,
            attribute,
        });
        self.current = output;
    }

    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type::FLOAT),
            name: Some(name.into()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..TensorProto::default()
        });
    }

    fn tensor_initializer(&mut self, name: &str, tensor: &Tensor) {
        let values: Vec<f32> = tensor.iter().copied().collect();
        self.initializer(name, tensor.shape(), &values);
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::INT), i: Some(value), ..AttributeProto::default() }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..AttributeProto::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::FLOAT), f: Some(value), ..AttributeProto::default() }
}

/// A float tensor's name, type and shape; `None` axes are symbolic (the batch, `N`).
fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(size) => Dimension { dim_value: Some(*size), dim_param: None },
            None => Dimension { dim_value: None, dim_param: Some("N".into()) },
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor { elem_type: Some(data_type::FLOAT), shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

//! ONNX export and import (src/models/onnx/): every preset, a merged model, the default (int8)
//! model and an architecture that uses every layer kind and padding, checked against
//! onnxruntime (an independent runtime, run by tests/onnx_runtime.py in the .venv-onnx
//! virtualenv that ./build.sh setup makes) on 100 faces, and round-tripped export → import with
//! bit-identical weights. Import also reads the spellings other exporters use (MatMul + Add,
//! Reshape, SAME_UPPER, another batch-norm epsilon), and refuses what the engine cannot run,
//! naming the operator, without panicking on damaged files. A standard PyTorch CNN exported by
//! both of PyTorch 2.x's exporters (tests/fixtures/pytorch_onnx/, written by
//! reference/torch/onnx_exporters.py) imports and gives PyTorch's answers, its external weight
//! file read only from the graph's own folder.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;

use fer_cnn::data::input::face_to_input;
use fer_cnn::data::FACE_PIXELS;
use fer_cnn::engine::network::batch_tensor;
use fer_cnn::engine::{LayerSpec, ModelSpec, Network, Padding};
use fer_cnn::inference::{predict_faces, Tta};
use fer_cnn::models::onnx::proto::{attribute_type, data_type, AttributeProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto};
use fer_cnn::models::onnx::{import_onnx_with_external_data, load_any_model_with_external_data};
use fer_cnn::models::{export_onnx, import_onnx, load_any_model, load_model, merge, preset, ModelMetadata};

/// Largest difference allowed between onnxruntime's probabilities and ours.
const TOLERANCE: f32 = 1e-4;
const FACES: usize = 100;

/// Deterministic faces with structure at several scales (shading, features, texture), covering 0–255.
fn faces(count: usize) -> Vec<u8> {
    let mut state = 0x2545_f491u32;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let mut faces = Vec::with_capacity(count * FACE_PIXELS);
    for i in 0..count {
        let (fx, fy, phase) = (0.05 + 0.02 * (i % 7) as f32, 0.03 + 0.03 * (i % 5) as f32, i as f32);
        let contrast = 40.0 + (i % 4) as f32 * 25.0;
        for y in 0..48 {
            for x in 0..48 {
                let (dx, dy) = (x as f32 - 24.0, y as f32 - 20.0 - (i % 6) as f32);
                let blob = if dx * dx / 200.0 + dy * dy / 300.0 < 1.0 { 40.0 } else { -20.0 };
                let value = 128.0 + contrast * (fx * x as f32 + fy * y as f32 + phase).sin() + blob + 60.0 * noise();
                faces.push(value.clamp(0.0, 255.0) as u8);
            }
        }
    }
    faces
}

/// Every layer kind, padding kind and a grouped convolution, with windows that do not divide
/// their input (floor mode) and TensorFlow's uneven SAME split.
fn coverage_spec() -> ModelSpec {
    use LayerSpec::*;
    let conv = |filters, kernel, stride, padding, groups| Conv2d { filters, kernel, stride, padding, groups };
    ModelSpec {
        name: "coverage".into(),
        input: [1, 48, 48],
        layers: vec![
            conv(8, 3, 2, Padding::Same, 1), // 24x24, padded (0, 1)
            BatchNorm,
            Relu,
            conv(16, 3, 1, Padding::Explicit(2), 4), // 26x26, grouped
            MaxPool { window: 3, stride: 2 },        // 12x12, the last row and column left out
            conv(16, 5, 1, Padding::Valid, 1),       // 8x8
            Relu,
            AvgPool { window: 3, stride: 2 }, // 3x3, floor mode
            conv(32, 2, 1, Padding::Same, 2), // 3x3, padded (0, 1)
            GlobalAvgPool,
            BatchNorm,
            Dropout { rate: 0.3 },
            Dense { units: 16 },
            Relu,
            Flatten,
            Dense { units: 7 },
        ],
        classes: 7,
    }
}

/// Batch-norm scales and shifts away from 1 and 0, and running statistics measured on `faces`,
/// so that every batch-norm input of the graph matters.
fn realistic_batch_norm(network: &mut Network, faces: &[u8]) {
    let mut state = 7u32;
    for (name, tensor) in network.named_tensors_mut() {
        let offset = if name.ends_with("gamma") { 1.0 } else { 0.0 };
        if name.ends_with("gamma") || name.ends_with("beta") {
            tensor.mapv_inplace(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                offset + ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.6
            });
        }
    }
    let mut inputs = vec![0.0; faces.len()];
    for (face, input) in faces.chunks_exact(FACE_PIXELS).zip(inputs.chunks_exact_mut(FACE_PIXELS)) {
        face_to_input(face, input);
    }
    let batch = batch_tensor([1, 48, 48], inputs).expect("whole faces");
    network.recalibrate_batch_norm([batch]);
}

/// The models under test, by name.
fn models() -> Vec<(String, Network, ModelMetadata)> {
    let faces = faces(FACES);
    let mut models = Vec::new();
    for name in ["seed", "mlp", "deep", "deeper"] {
        let mut network = Network::new(preset(name).expect("a preset"), 1).expect("builds");
        realistic_batch_norm(&mut network, &faces);
        models.push((name.to_string(), network, ModelMetadata { train_rows: Some(6000), ..ModelMetadata::default() }));
    }
    let members: Vec<Network> = (1..=2)
        .map(|seed| {
            let mut network = Network::new(preset("deep").expect("a preset"), seed).expect("builds");
            realistic_batch_norm(&mut network, &faces);
            network
        })
        .collect();
    let merged = merge(&members).expect("merges");
    models.push(("deep-x2 (merged, grouped convolutions)".into(), merged, ModelMetadata::default()));
    let mut coverage = Network::new(coverage_spec(), 3).expect("builds");
    realistic_batch_norm(&mut coverage, &faces);
    models.push(("coverage (every layer kind)".into(), coverage, ModelMetadata::default()));
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default.safetensors");
    let loaded = load_model(&std::fs::read(default).expect("the default model")).expect("loads");
    models.push(("default model (trained, int8 file)".into(), loaded.network, loaded.metadata));
    models
}

/// The virtualenv's Python, which has onnxruntime; failing (not skipping) without it.
fn runtime_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-onnx/bin/python");
    let works = Command::new(&python).args(["-c", "import onnxruntime, numpy"]).output().is_ok_and(|o| o.status.success());
    assert!(works, "onnxruntime is not installed in {}: run ./build.sh setup (it creates the virtualenv)", python.display());
    python
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fer-onnx-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

#[test]
fn onnxruntime_gives_our_probabilities_for_every_preset() {
    let python = runtime_python();
    let faces = faces(FACES);
    let dir = scratch_dir("runtime");
    let (faces_path, out_path) = (dir.join("faces.u8"), dir.join("probabilities.f32"));
    std::fs::write(&faces_path, &faces).expect("writes");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_runtime.py");
    let mut failures = Vec::new();
    for (name, mut network, metadata) in models() {
        let model_path = dir.join("model.onnx");
        std::fs::write(&model_path, export_onnx(&network, &metadata).expect("exports")).expect("writes");
        let run = Command::new(&python).arg(&script).args([&model_path, &faces_path, &out_path]).output().expect("runs python");
        assert!(run.status.success(), "{name}: onnxruntime failed:\n{}", String::from_utf8_lossy(&run.stderr));
        let theirs: Vec<f32> =
            std::fs::read(&out_path).expect("reads").chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let ours = predict_faces(&mut network, &faces, Tta::None);
        assert_eq!(theirs.len(), ours.len(), "{name}: one probability per class and face");
        let difference = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let agree =
            ours.rows().into_iter().zip(theirs.chunks_exact(7)).filter(|(a, b)| argmax(a.as_slice().unwrap_or(&[])) == argmax(b)).count();
        eprintln!(
            "{name}: max |probability difference| {difference:.2e} on {FACES} faces, same class for {agree}; {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
        if difference > TOLERANCE {
            failures.push(format!("{name}: {difference:.2e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "onnxruntime differs by more than {TOLERANCE}: {failures:?}");
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

/// Same architecture, metadata, and every tensor bit for bit.
fn assert_same_model(name: &str, original: &Network, metadata: &ModelMetadata, imported: &fer_cnn::models::LoadedModel) {
    assert_eq!(imported.network.spec(), original.spec(), "{name}: architecture");
    assert_eq!(&imported.metadata, metadata, "{name}: metadata");
    let (a, b) = (original.named_tensors(), imported.network.named_tensors());
    assert_eq!(a.len(), b.len(), "{name}: tensor count");
    for ((name_a, a), (name_b, b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert_eq!(a.shape(), b.shape(), "{name}: {name_a}");
        assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: {name_a} differs");
    }
}

#[test]
fn export_then_import_gives_identical_weights() {
    for (name, network, metadata) in models() {
        let bytes = export_onnx(&network, &metadata).expect("exports");
        let imported = import_onnx(&bytes).expect("imports");
        assert_same_model(&name, &network, &metadata, &imported);
        assert_eq!(export_onnx(&imported.network, &imported.metadata).expect("exports"), bytes, "{name}: export is stable");
        // Content, not the file name, tells the two formats apart.
        assert_eq!(load_any_model(&bytes).expect("loads").network.spec(), network.spec());
        eprintln!("{name}: {} tensors identical after export and import ({} bytes)", network.named_tensors().len(), bytes.len());
    }
}

fn decode(bytes: &[u8]) -> ModelProto {
    ModelProto::decode(bytes).expect("an ONNX model")
}

fn preset_onnx(name: &str) -> (Network, Vec<u8>) {
    let network = Network::new(preset(name).expect("a preset"), 5).expect("builds");
    let bytes = export_onnx(&network, &ModelMetadata::default()).expect("exports");
    (network, bytes)
}

fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::FLOAT),
        float_data: values.to_vec(),
        ..TensorProto::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        op_type: Some(op.into()),
        attribute,
        ..NodeProto::default()
    }
}

/// The weights of a graph written as another exporter would: MatMul + Add instead of Gemm,
/// Reshape from a Constant node instead of Flatten, `x · (1/64) + (−2)` as the input scaling,
/// SAME_UPPER instead of explicit pads, float_data instead of raw bytes.
#[test]
fn other_exporters_spellings_import_to_the_same_network() {
    let (network, bytes) = preset_onnx("seed");
    let mut model = decode(&bytes);
    let graph = model.graph.as_mut().expect("a graph");
    let mut nodes = Vec::new();
    let mut extra = Vec::new();
    for old in graph.node.drain(..) {
        let op = old.op_type.clone().unwrap_or_default();
        let output = old.output[0].clone();
        match op.as_str() {
            "Sub" => {
                extra.push(floats("one_64th", &[], &[1.0 / 64.0]));
                nodes.push(node("Mul", &["one_64th", &old.input[0]], "scaled", vec![]));
            }
            "Div" => {
                extra.push(floats("minus_two", &[1], &[-2.0]));
                nodes.push(node("Add", &["scaled", "minus_two"], &output, vec![]));
            }
            "Conv" => {
                let mut conv = old.clone();
                conv.attribute.retain(|a| a.name.as_deref() != Some("pads"));
                conv.attribute.push(AttributeProto {
                    name: Some("auto_pad".into()),
                    r#type: Some(attribute_type::STRING),
                    s: Some(b"SAME_UPPER".to_vec()),
                    ..AttributeProto::default()
                });
                nodes.push(conv);
            }
            "Flatten" => {
                let shape =
                    TensorProto { dims: vec![2], data_type: Some(data_type::INT64), int64_data: vec![0, -1], ..TensorProto::default() };
                let value = AttributeProto {
                    name: Some("value".into()),
                    r#type: Some(attribute_type::TENSOR),
                    t: Some(shape),
                    ..AttributeProto::default()
                };
                nodes.push(node("Constant", &[], "flat_shape", vec![value]));
                nodes.push(node("Reshape", &[&old.input[0], "flat_shape"], &output, vec![]));
            }
            "Gemm" => {
                let weight = graph.initializer.iter().find(|t| t.name.as_deref() == Some(old.input[1].as_str())).expect("weight").clone();
                let (units, inputs) = (weight.dims[0] as usize, weight.dims[1] as usize);
                let values: Vec<f32> = weight
                    .raw_data
                    .as_deref()
                    .expect("raw")
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let transposed: Vec<f32> = (0..inputs * units).map(|i| values[(i % units) * inputs + i / units]).collect();
                let name = format!("{}.transposed", old.input[1]);
                extra.push(floats(&name, &[inputs as i64, units as i64], &transposed));
                let product = format!("{output}.product");
                nodes.push(node("MatMul", &[&old.input[0], &name], &product, vec![]));
                nodes.push(node("Add", &[&old.input[2], &product], &output, vec![]));
            }
            _ => nodes.push(old),
        }
    }
    graph.node = nodes;
    graph.initializer.extend(extra);
    // Without the exporter's spec, the graph alone decides (SAME_UPPER reads as `same`).
    model.metadata_props.clear();
    let imported = import_onnx(&model.encode_to_vec()).expect("imports");
    let mut expected = network.spec().clone();
    expected.name = "seed".into();
    assert_eq!(imported.network.spec(), &expected);
    for ((name, a), (_, b)) in network.named_tensors().iter().zip(&imported.network.named_tensors()) {
        assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs");
    }
}

#[test]
fn another_batch_norm_epsilon_moves_into_the_variance() {
    let (network, bytes) = preset_onnx("deep");
    let mut model = decode(&bytes);
    for node in &mut model.graph.as_mut().expect("a graph").node {
        for attribute in &mut node.attribute {
            if attribute.name.as_deref() == Some("epsilon") {
                attribute.f = Some(1e-3);
            }
        }
    }
    let imported = import_onnx(&model.encode_to_vec()).expect("imports");
    let (before, after) =
        (network.tensor("layers.1.running_var").expect("a variance"), imported.network.tensor("layers.1.running_var").expect("a variance"));
    for (b, a) in before.iter().zip(after.iter()) {
        assert!((a - (b + 1e-3 - 1e-5)).abs() < 1e-6, "{b} → {a}");
    }
}

fn nodes(model: &mut ModelProto) -> &mut Vec<NodeProto> {
    &mut model.graph.as_mut().expect("a graph").node
}

/// Changes the initializer called `name` (every one, should there be several).
fn initializer(model: &mut ModelProto, name: &str, change: &dyn Fn(&mut TensorProto)) {
    let graph = model.graph.as_mut().expect("a graph");
    graph.initializer.iter_mut().filter(|t| t.name.as_deref() == Some(name)).for_each(change);
}

fn import_error(model: &ModelProto) -> String {
    match import_onnx(&model.encode_to_vec()) {
        Ok(_) => panic!("imported"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn graphs_the_engine_cannot_run_are_refused_naming_the_reason() {
    let (_, bytes) = preset_onnx("seed");
    let original = decode(&bytes);
    let with = |change: &dyn Fn(&mut ModelProto)| {
        let mut model = original.clone();
        change(&mut model);
        import_error(&model)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("an operator the engine lacks", with(&|m| nodes(m)[3].op_type = Some("Sigmoid".into())), "operator 'Sigmoid' is not supported"),
        ("another domain", with(&|m| nodes(m)[3].domain = Some("com.microsoft".into())), "com.microsoft"),
        (
            "no input scaling",
            with(&|m| {
                let graph = m.graph.as_mut().expect("a graph");
                graph.node.drain(..2);
                graph.node[0].input[0] = "pixels".into();
            }),
            "(p - 128) / 64",
        ),
        (
            "another input scaling",
            with(&|m| initializer(m, "preprocess.scale", &|t| t.raw_data = Some(255f32.to_le_bytes().to_vec()))),
            "(p - 128) / 64",
        ),
        ("a branch", with(&|m| nodes(m)[4].input[0] = "pixels".into()), "only a chain of layers"),
        (
            "uneven pads",
            with(&|m| {
                let conv = &mut nodes(m)[2];
                conv.attribute.iter_mut().filter(|a| a.name.as_deref() == Some("pads")).for_each(|a| a.ints = vec![2, 1, 1, 1]);
            }),
            "pads [2, 1, 1, 1]",
        ),
        (
            "an unknown attribute",
            with(&|m| nodes(m)[2].attribute.push(AttributeProto { name: Some("fancy".into()), i: Some(1), ..AttributeProto::default() })),
            "attribute 'fancy'",
        ),
        (
            "ceil mode past the edge",
            with(&|m| {
                let pool = nodes(m).iter_mut().find(|n| n.op_type.as_deref() == Some("MaxPool")).expect("a pool");
                pool.attribute.push(AttributeProto { name: Some("ceil_mode".into()), i: Some(1), ..AttributeProto::default() });
                pool.attribute.iter_mut().filter(|a| a.name.as_deref() == Some("kernel_shape")).for_each(|a| a.ints = vec![7, 7]);
            }),
            "ceil_mode",
        ),
        ("a huge weight", with(&|m| initializer(m, "layers.0.weight", &|t| t.dims = vec![1 << 20, 1 << 20, 4, 4])), "holds more than"),
        ("a weight of the wrong size", with(&|m| initializer(m, "layers.0.weight", &|t| t.dims = vec![8, 1, 4, 5])), "square kernels"),
        (
            "NaN weights",
            with(&|m| {
                initializer(m, "layers.0.bias", &|t| t.raw_data = Some([f32::NAN; 8].iter().flat_map(|v| v.to_le_bytes()).collect()))
            }),
            "NaN",
        ),
        ("external data naming no file", with(&|m| initializer(m, "layers.0.weight", &|t| t.data_location = Some(1))), "names no file"),
        ("a newer opset", with(&|m| m.opset_import[0].version = Some(99)), "operator set 99"),
        (
            "another input shape",
            with(&|m| {
                let input = &mut m.graph.as_mut().expect("a graph").input[0];
                let dims =
                    &mut input.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()).and_then(|t| t.shape.as_mut()).expect("a shape").dim;
                dims[1].dim_value = Some(3);
            }),
            "[N, 1, 48, 48]",
        ),
        (
            "an operator after the softmax",
            with(&|m| {
                let graph = m.graph.as_mut().expect("a graph");
                graph.node.push(node("Relu", &["probabilities"], "after", vec![]));
                graph.output[0].name = Some("after".into());
            }),
            "after the Softmax",
        ),
        (
            "a fixed batch in Reshape",
            with(&|m| {
                let graph = m.graph.as_mut().expect("a graph");
                let flatten = graph.node.iter().position(|n| n.op_type.as_deref() == Some("Flatten")).expect("a flatten");
                graph.node[flatten].op_type = Some("Reshape".into());
                graph.node[flatten].attribute.clear();
                graph.node[flatten].input.push("shape".into());
                graph.initializer.push(TensorProto {
                    name: Some("shape".into()),
                    dims: vec![2],
                    data_type: Some(data_type::INT64),
                    int64_data: vec![1, 64],
                    ..TensorProto::default()
                });
            }),
            "reshapes to [1, 64]",
        ),
        (
            "the wrong number of classes",
            with(&|m| {
                let graph = m.graph.as_mut().expect("a graph");
                for t in graph.initializer.iter_mut().filter(|t| t.name.as_deref().is_some_and(|n| n.starts_with("layers.9."))) {
                    t.dims[0] = 3;
                    let keep = t.raw_data.as_ref().map_or(0, |r| r.len() * 3 / 7);
                    t.raw_data.as_mut().expect("raw").truncate(keep);
                }
            }),
            "score the 7 FER2013 expressions",
        ),
    ];
    for (what, message, expected) in cases {
        eprintln!("{what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
    }
}

#[test]
fn damaged_files_are_refused_without_panicking() {
    let (_, bytes) = preset_onnx("seed");
    for garbage in [&b""[..], b"not a model at all", &bytes[..bytes.len() / 2], &[0xff; 64]] {
        let message = match load_any_model(garbage) {
            Ok(_) => panic!("loaded {} bytes of garbage", garbage.len()),
            Err(error) => error.to_string(),
        };
        assert!(message.contains("nor is it an ONNX model"), "{message}");
    }
    // Every byte position changed in turn, in a small model: each result is a model or an error.
    let mut state = 99u32;
    let mut loaded = 0;
    for position in (0..bytes.len()).step_by(7) {
        let mut damaged = bytes.clone();
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        damaged[position] ^= (state >> 24) as u8 | 1;
        loaded += usize::from(import_onnx(&damaged).is_ok());
    }
    eprintln!("{loaded} of {} damaged copies still imported (a changed weight value is still a model)", bytes.len().div_ceil(7));
}

/// Telling the formats apart by content keeps the safetensors loader's messages for files that
/// are neither (the page's "Load a model file" shows them).
#[test]
fn hostile_safetensors_files_keep_their_messages_when_either_format_is_accepted() {
    for (what, bytes, expected) in common::hostile::hostile_files() {
        let message = match load_any_model(&bytes) {
            Ok(_) => panic!("{what}: loaded"),
            Err(error) => error.to_string(),
        };
        assert!(message.contains(expected), "{what}: {message}");
    }
}

/// `fer export` and `fer import`: a preset's fresh weights (as `fer info` builds them) come back
/// identical; a file that is not ONNX fails with a message and a non-zero exit.
#[test]
fn the_command_line_exports_and_imports() {
    let dir = scratch_dir("cli");
    let fer = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_fer")).args(args).current_dir(&dir).output().expect("runs fer");
    for name in ["seed", "deep"] {
        let export = fer(&["export", "--model", name, "--onnx", "m.onnx"]);
        assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
        let import = fer(&["import", "--onnx", "m.onnx", "--out", "m.safetensors"]);
        assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
        let imported = load_model(&std::fs::read(dir.join("m.safetensors")).expect("written")).expect("loads");
        let original = Network::new(preset(name).expect("a preset"), 0).expect("builds");
        assert_same_model(name, &original, &ModelMetadata::default(), &imported);
    }
    std::fs::write(dir.join("notes.onnx"), "not a model").expect("writes");
    let refused = fer(&["import", "--onnx", "notes.onnx", "--out", "x.safetensors"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.starts_with("error: model: not a readable ONNX model"), "{stderr}");
    assert!(!dir.join("x.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The PyTorch 2.x exports: tests/fixtures/pytorch_onnx/ (reference/torch/onnx_exporters.py).
fn pytorch_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_onnx")
}

/// Largest difference allowed between PyTorch's probabilities (float64) and ours (float32).
const PYTORCH_TOLERANCE: f32 = 1e-6;

/// Reads external data files from `folder`, counting the reads.
fn files_in<'a>(folder: &Path, reads: &'a mut Vec<String>) -> impl FnMut(&str) -> fer_cnn::Result<Option<Vec<u8>>> + 'a {
    let folder = folder.to_path_buf();
    move |name| {
        reads.push(name.to_string());
        Ok(std::fs::read(folder.join(name)).ok())
    }
}

/// The dynamo export's graph, decoded (its weights still in dynamo.onnx.data).
fn dynamo_graph() -> ModelProto {
    decode(&std::fs::read(pytorch_fixtures().join("dynamo.onnx")).expect("the dynamo fixture"))
}

fn import_dynamo(model: &ModelProto) -> fer_cnn::Result<fer_cnn::models::LoadedModel> {
    import_onnx_with_external_data(&model.encode_to_vec(), &mut files_in(&pytorch_fixtures(), &mut Vec::new()))
}

/// The faces of expected.json and PyTorch's probabilities for them.
fn pytorch_expected() -> (Vec<u8>, Vec<f32>) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pytorch_fixtures().join("expected.json")).expect("expected.json")).expect("JSON");
    let numbers = |key: &str| -> Vec<f64> {
        json[key]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(|row| row.as_array().expect("a row").iter().map(|v| v.as_f64().expect("a number")))
            .collect()
    };
    (numbers("faces").iter().map(|&v| v as u8).collect(), numbers("probabilities").iter().map(|&v| v as f32).collect())
}

/// Largest |probability difference| between the network and PyTorch on expected.json's faces.
fn pytorch_difference(network: &mut Network) -> f32 {
    let (faces, theirs) = pytorch_expected();
    let ours = predict_faces(network, &faces, Tta::None);
    assert_eq!(ours.len(), theirs.len());
    ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn standard_net_layers() -> Vec<LayerSpec> {
    use LayerSpec::*;
    // padding=1 around a 3x3 kernel pads as `same` does, and reads as `same`.
    let conv = |filters| Conv2d { filters, kernel: 3, stride: 1, padding: Padding::Same, groups: 1 };
    let pool = MaxPool { window: 2, stride: 2 };
    // PyTorch's exporters fold the batch-norm layers into the convolutions.
    vec![conv(8), Relu, pool.clone(), conv(16), Relu, pool.clone(), conv(16), Relu, pool, GlobalAvgPool, Dense { units: 7 }]
}

/// The same PyTorch CNN from both exporters: the dynamo exporter's (PyTorch 2.9+'s default:
/// weights in dynamo.onnx.data, ReduceMean, a Reshape with the example's fixed batch) and the
/// TorchScript exporter's (GlobalAveragePool, Flatten) give PyTorch's probabilities.
#[test]
fn pytorch_2_exports_from_both_exporters_give_pytorchs_answers() {
    let mut reads = Vec::new();
    let graph = std::fs::read(pytorch_fixtures().join("dynamo.onnx")).expect("the dynamo fixture");
    let mut dynamo = import_onnx_with_external_data(&graph, &mut files_in(&pytorch_fixtures(), &mut reads)).expect("imports").network;
    assert_eq!(reads, ["dynamo.onnx.data"], "the data file is read once, by its name");
    let mut legacy =
        import_onnx(&std::fs::read(pytorch_fixtures().join("legacy.onnx")).expect("the legacy fixture")).expect("imports").network;
    for (name, network) in [("dynamo", &mut dynamo), ("legacy", &mut legacy)] {
        assert_eq!(network.spec().layers, standard_net_layers(), "{name}");
        let difference = pytorch_difference(network);
        eprintln!("PyTorch's {name} exporter: max |probability difference| {difference:.1e} from PyTorch (float64) on 4 faces");
        assert!(difference <= PYTORCH_TOLERANCE, "{name}: {difference:.2e}");
    }
    // Alone, the graph says which file it is missing and how to give it.
    let message = import_onnx(&graph).err().expect("refused").to_string();
    assert!(message.contains("'dynamo.onnx.data'") && message.contains("which was not given"), "{message}");
    // Content tells the formats apart with external data too.
    let loaded = load_any_model_with_external_data(&graph, &mut files_in(&pytorch_fixtures(), &mut Vec::new())).expect("loads");
    assert_eq!(loaded.network.spec().layers, standard_net_layers());
}

/// Sets every external tensor's `key` to `value` (adding the key where it is missing).
fn set_external(model: &mut ModelProto, key: &str, value: &str) {
    for tensor in &mut model.graph.as_mut().expect("a graph").initializer {
        if tensor.data_location == Some(1) {
            match tensor.external_data.iter_mut().find(|e| e.key.as_deref() == Some(key)) {
                Some(entry) => entry.value = Some(value.into()),
                None => tensor.external_data.push(StringStringEntryProto { key: Some(key.into()), value: Some(value.into()) }),
            }
        }
    }
}

/// A graph may only name a file beside it: anything else is refused before the reader is asked
/// for anything. Missing, truncated or mismatched data files are refused with their reason.
#[test]
fn external_data_is_read_only_from_beside_the_graph() {
    let original = dynamo_graph();
    // A copy of the data one folder up, which must not be read.
    let parent = scratch_dir("external-parent");
    let folder = parent.join("graph");
    std::fs::create_dir_all(&folder).expect("a folder");
    std::fs::copy(pytorch_fixtures().join("dynamo.onnx.data"), parent.join("dynamo.onnx.data")).expect("copies");
    let absolute = parent.join("dynamo.onnx.data").display().to_string();
    for location in
        ["../dynamo.onnx.data", absolute.as_str(), "graph/../dynamo.onnx.data", "..\\dynamo.onnx.data", "C:dynamo.onnx.data", "..", ""]
    {
        let mut model = original.clone();
        set_external(&mut model, "location", location);
        let mut reads = Vec::new();
        let message = match import_onnx_with_external_data(&model.encode_to_vec(), &mut files_in(&folder, &mut reads)) {
            Ok(_) => panic!("{location}: imported"),
            Err(error) => error.to_string(),
        };
        eprintln!("location '{location}': {message}");
        let expected = if location.is_empty() { "names no file" } else { "not a file in the graph's own folder" };
        assert!(message.contains(expected), "{location}: {message}");
        assert!(reads.is_empty(), "{location}: the reader was asked for {reads:?}");
    }
    let data = std::fs::read(pytorch_fixtures().join("dynamo.onnx.data")).expect("the data");
    let graph = original.encode_to_vec();
    let with_data = |bytes: Vec<u8>| {
        import_onnx_with_external_data(&graph, &mut |_: &str| Ok(Some(bytes.clone()))).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let missing = import_onnx_with_external_data(&graph, &mut files_in(&folder, &mut Vec::new())).err().expect("refused").to_string();
    let changed = |key: &str, value: &str| {
        let mut model = original.clone();
        set_external(&mut model, key, value);
        import_dynamo(&model).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let cases = [
        ("no data file beside the graph", missing, "'dynamo.onnx.data' (ONNX external data"),
        ("a truncated data file", with_data(data[..data.len() - 100].to_vec()), "the data file is truncated or belongs to another graph"),
        ("an offset past the end", changed("offset", "1000000"), "the data file is truncated"),
        ("a length past the end", changed("length", "99999999999"), "the data file is truncated"),
        ("an offset that is no number", changed("offset", "-4"), "not a byte count"),
        ("an unknown key", changed("basepath", "/etc"), "external data key 'basepath'"),
        ("a length that is not the tensor's", changed("length", "4"), "holds fewer or more values than its shape"),
    ];
    for (what, message, expected) in cases {
        eprintln!("{what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
    }
    let _ = std::fs::remove_dir_all(&parent);
}

/// Changes the dynamo graph's ReduceMean node.
fn with_reduce_mean(change: &dyn Fn(&mut ModelProto, usize)) -> ModelProto {
    let mut model = dynamo_graph();
    let index = nodes(&mut model).iter().position(|n| n.op_type.as_deref() == Some("ReduceMean")).expect("a ReduceMean");
    change(&mut model, index);
    model
}

fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(data_type::INT64),
        int64_data: values.to_vec(),
        ..TensorProto::default()
    }
}

fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::INTS), ints: values.to_vec(), ..AttributeProto::default() }
}

fn set_int_attribute(node: &mut NodeProto, name: &str, value: i64) {
    node.attribute.retain(|a| a.name.as_deref() != Some(name));
    node.attribute.push(AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(value),
        ..AttributeProto::default()
    });
}

/// ReduceMean over height and width is global average pooling in every spelling: axes [2, 3]
/// or negative, as an input (opset 18+) or an attribute (before), keeping the unit axes (then
/// a Reshape or Flatten) or not; over any other axes it is refused.
#[test]
fn reduce_mean_over_height_and_width_is_global_average_pooling() {
    let axes = |values: &'static [i64]| {
        move |m: &mut ModelProto, i: usize| {
            m.graph.as_mut().expect("a graph").initializer.push(int64s("axes_here", values));
            nodes(m)[i].input[1] = "axes_here".into();
        }
    };
    let as_attribute = |values: &'static [i64]| {
        move |m: &mut ModelProto, i: usize| {
            m.opset_import[0].version = Some(13);
            let node = &mut nodes(m)[i];
            node.input.truncate(1);
            node.attribute.retain(|a| a.name.as_deref() != Some("noop_with_empty_axes"));
            node.attribute.push(ints_attribute("axes", values));
        }
    };
    // keepdims 0, the Reshape left out: Gemm reads [N, 16] from the ReduceMean.
    let flat = |m: &mut ModelProto, i: usize| {
        set_int_attribute(&mut nodes(m)[i], "keepdims", 0);
        let output = nodes(m)[i].output[0].clone();
        let reshape = nodes(m).remove(i + 1);
        nodes(m).iter_mut().filter(|n| n.input.first() == reshape.output.first()).for_each(|n| n.input[0] = output.clone());
    };
    let imports: Vec<(&str, ModelProto)> = vec![
        ("axes [2, 3]", with_reduce_mean(&axes(&[2, 3]))),
        ("axes [3, -2]", with_reduce_mean(&axes(&[3, -2]))),
        ("keepdims 0 without a Reshape", with_reduce_mean(&flat)),
        ("opset 13, axes an attribute", with_reduce_mean(&as_attribute(&[2, 3]))),
        (
            "opset 13, keepdims 0",
            with_reduce_mean(&|m, i| {
                as_attribute(&[-1, -2])(m, i);
                flat(m, i);
            }),
        ),
    ];
    for (what, model) in imports {
        let mut network = import_dynamo(&model).unwrap_or_else(|e| panic!("{what}: {e}")).network;
        assert_eq!(network.spec().layers, standard_net_layers(), "{what}");
        let difference = pytorch_difference(&mut network);
        assert!(difference <= PYTORCH_TOLERANCE, "{what}: {difference:.2e}");
    }
    let refusals: Vec<(&str, ModelProto, &str)> = vec![
        ("over channels and height", with_reduce_mean(&axes(&[1, 2])), "averages over axes [1, 2]"),
        ("over the width alone", with_reduce_mean(&axes(&[-1])), "only the mean over height and width"),
        ("over every axis", with_reduce_mean(&|m, i| nodes(m)[i].input.truncate(1)), "averages every axis"),
        (
            "an axes attribute in opset 20",
            with_reduce_mean(&|m, i| nodes(m)[i].attribute.push(ints_attribute("axes", &[2, 3]))),
            "second input",
        ),
        ("over the channels, opset 13", with_reduce_mean(&as_attribute(&[1])), "averages over axes [1]"),
        (
            "an axes input in opset 13",
            with_reduce_mean(&|m, i| {
                let axes = nodes(m)[i].input[1].clone();
                as_attribute(&[2, 3])(m, i);
                nodes(m)[i].input.push(axes);
            }),
            "before opset 18 the axes are an attribute",
        ),
        (
            "a Reshape to another fixed batch",
            with_reduce_mean(&|m, i| {
                m.graph.as_mut().expect("a graph").initializer.push(int64s("batch_two", &[2, 16]));
                nodes(m)[i + 1].input[1] = "batch_two".into();
            }),
            "reshapes to [2, 16]",
        ),
    ];
    for (what, model, expected) in refusals {
        let message = import_dynamo(&model).err().map(|e| e.to_string()).unwrap_or_else(|| format!("{what}: imported"));
        eprintln!("ReduceMean {what}: {message}");
        assert!(message.contains(expected), "{what}: {message}");
    }
}

/// `fer import` reads a PyTorch 2.x graph's NAME.onnx.data from the graph's folder (not the
/// working directory), and says which file is missing when it is not there.
#[test]
fn the_command_line_reads_external_data_beside_the_graph() {
    let dir = scratch_dir("cli-external");
    let folder = dir.join("exported");
    std::fs::create_dir_all(&folder).expect("a folder");
    for name in ["dynamo.onnx", "dynamo.onnx.data"] {
        std::fs::copy(pytorch_fixtures().join(name), folder.join(name)).expect("copies");
    }
    let fer = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_fer")).args(args).current_dir(&dir).output().expect("runs fer");
    let import = fer(&["import", "--onnx", "exported/dynamo.onnx", "--out", "m.safetensors"]);
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let mut network = load_model(&std::fs::read(dir.join("m.safetensors")).expect("written")).expect("loads").network;
    assert!(pytorch_difference(&mut network) <= PYTORCH_TOLERANCE);
    // `fer info` (and every command taking --model) reads it the same way.
    let info = fer(&["info", "exported/dynamo.onnx"]);
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    // The data in the working directory instead: not read.
    std::fs::rename(folder.join("dynamo.onnx.data"), dir.join("dynamo.onnx.data")).expect("moves");
    let refused = fer(&["import", "--onnx", "exported/dynamo.onnx", "--out", "x.safetensors"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("'dynamo.onnx.data'") && stderr.contains("graph's folder"), "{stderr}");
    assert!(!dir.join("x.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

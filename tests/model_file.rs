//! Model files: round trips give identical predictions; a hand-made file gives known answers;
//! damaged or mismatched files are refused with a message that says why.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;

use fer_cnn::engine::layers::LayerSpec;
use fer_cnn::engine::{ModelSpec, Network, Tensor};
use fer_cnn::models::{load_model, preset, save_model, ModelMetadata, StoredDtype, PRESETS};
use ndarray::IxDyn;
use safetensors::tensor::{Dtype, TensorView};

fn faces(n: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(&[n, 1, 48, 48]), |idx| ((idx[0] * 31 + idx[2] * 7 + idx[3] * 3) % 255) as f32 / 64.0 - 2.0)
}

fn error_of(bytes: &[u8]) -> String {
    match load_model(bytes) {
        Ok(_) => panic!("expected the file to be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_preset_round_trips_with_identical_predictions() {
    for (name, _) in PRESETS {
        let mut network = Network::new(preset(name).unwrap(), 7).unwrap();
        let before = network.predict(faces(3));
        let metadata = ModelMetadata {
            publictest_accuracy: Some(0.5),
            other: BTreeMap::from([("note".to_string(), "kept".to_string())]),
            ..ModelMetadata::default()
        };
        let bytes = save_model(&network, StoredDtype::F32, &metadata).unwrap();
        let mut loaded = load_model(&bytes).unwrap();
        assert_eq!(loaded.network.spec(), network.spec());
        assert_eq!(loaded.metadata, metadata);
        assert_eq!(loaded.network.predict(faces(3)), before, "{name}");
    }
}

#[test]
fn half_precision_files_are_half_the_size_and_predict_nearly_the_same() {
    let mut network = Network::new(preset("deep").unwrap(), 7).unwrap();
    let full = save_model(&network, StoredDtype::F32, &ModelMetadata::default()).unwrap();
    let half = save_model(&network, StoredDtype::F16, &ModelMetadata::default()).unwrap();
    assert!(half.len() < full.len() * 52 / 100, "{} vs {}", half.len(), full.len());
    let mut loaded = load_model(&half).unwrap().network;
    let (a, b) = (network.predict(faces(2)), loaded.predict(faces(2)));
    let largest = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(largest < 2e-3, "f16 changed a probability by {largest}");
}

#[test]
fn int8_files_are_a_quarter_of_the_size_and_predict_nearly_the_same() {
    let mut network = Network::new(preset("deep").unwrap(), 7).unwrap();
    network.recalibrate_batch_norm([faces(16)]);
    let full = save_model(&network, StoredDtype::F32, &ModelMetadata::default()).unwrap();
    let int8 = save_model(&network, StoredDtype::Int8, &ModelMetadata::default()).unwrap();
    assert!(int8.len() < full.len() * 27 / 100, "{} vs {}", int8.len(), full.len());
    let mut loaded = load_model(&int8).unwrap().network;
    // Each weight moves by at most half a step (max |w| / 254) of its output channel.
    for ((name, original), (_, stored)) in network.named_tensors().into_iter().zip(loaded.named_tensors()) {
        if original.ndim() < 2 {
            continue;
        }
        let rows = original.shape()[0];
        let per_row = original.len() / rows;
        let (original, stored): (Vec<f32>, Vec<f32>) = (original.iter().copied().collect(), stored.iter().copied().collect());
        for (a, b) in original.chunks(per_row).zip(stored.chunks(per_row)) {
            let half_step = a.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 254.0;
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= half_step * 1.001, "{name}: moved {worst}, half a step is {half_step}");
        }
    }
    let (a, b) = (network.predict(faces(2)), loaded.predict(faces(2)));
    let largest = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(largest < 2e-2, "int8 changed a probability by {largest}");
    // Weights already on the int8 grid stay there when saved again (the CLI saves twice when it
    // re-measures batch-norm statistics after rounding).
    let again = load_model(&save_model(&loaded, StoredDtype::Int8, &ModelMetadata::default()).unwrap()).unwrap().network;
    for ((name, first), (_, second)) in loaded.named_tensors().into_iter().zip(again.named_tensors()) {
        let worst = first.iter().zip(second.iter()).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{name} moved by {worst} (relative) when saved again");
    }
}

/// The smallest model that reads a face: its mean pixel, times one weight per class, plus a bias.
fn tiny_spec() -> ModelSpec {
    ModelSpec { name: "tiny".into(), input: [1, 48, 48], layers: vec![LayerSpec::GlobalAvgPool, LayerSpec::Dense { units: 7 }], classes: 7 }
}

fn file_of(spec: &ModelSpec, tensors: Vec<(&str, TensorView)>, format: &str) -> Vec<u8> {
    let metadata = [("format".to_string(), format.to_string()), ("spec".to_string(), serde_json::to_string(spec).unwrap())];
    safetensors::tensor::serialize(tensors, Some(metadata.into_iter().collect())).unwrap()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

const BIAS: [f32; 7] = [0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0];

fn tiny_file(weight: &[f32], weight_shape: Vec<usize>, format: &str) -> Vec<u8> {
    let (weight_bytes, bias_bytes) = (f32_bytes(weight), f32_bytes(&BIAS));
    let tensors = vec![
        ("layers.1.weight", TensorView::new(Dtype::F32, weight_shape, &weight_bytes).unwrap()),
        ("layers.1.bias", TensorView::new(Dtype::F32, vec![7], &bias_bytes).unwrap()),
    ];
    file_of(&tiny_spec(), tensors, format)
}

#[test]
fn a_hand_made_file_gives_known_logits() {
    // A face of ones has mean 1: logits = W + b with W = [1, 2, ..., 7].
    let weight: Vec<f32> = (1..=7).map(|k| k as f32).collect();
    let mut network = load_model(&tiny_file(&weight, vec![7, 1], "fer-cnn/1")).unwrap().network;
    let probs = network.predict(Tensor::ones(IxDyn(&[1, 1, 48, 48])));
    let logits: Vec<f32> = weight.iter().zip(BIAS).map(|(w, b)| w + b).collect();
    let total: f32 = logits.iter().map(|l| l.exp()).sum();
    for (k, logit) in logits.iter().enumerate() {
        assert!((probs[(0, k)] - logit.exp() / total).abs() < 1e-6, "class {k}");
    }
}

#[test]
fn a_hand_made_int8_file_gives_known_weights() {
    // Rows q = [2, −4, 127, 0, 1, 1, 1] with scales [0.5, 0.25, 0.25, 1, 1, 1, 2] → W = q · scale.
    let quantised: Vec<u8> = [2i8, -4, 127, 0, 1, 1, 1].iter().map(|q| *q as u8).collect();
    let scales = f32_bytes(&[0.5, 0.25, 0.25, 1.0, 1.0, 1.0, 2.0]);
    let bias = f32_bytes(&BIAS);
    let file = |with_scales: bool| {
        let mut tensors = vec![
            ("layers.1.weight", TensorView::new(Dtype::I8, vec![7, 1], &quantised).unwrap()),
            ("layers.1.bias", TensorView::new(Dtype::F32, vec![7], &bias).unwrap()),
        ];
        if with_scales {
            tensors.push(("layers.1.weight.scale", TensorView::new(Dtype::F32, vec![7], &scales).unwrap()));
        }
        file_of(&tiny_spec(), tensors, "fer-cnn/1")
    };
    let network = load_model(&file(true)).unwrap().network;
    let weight: Vec<f32> = network.tensor("layers.1.weight").unwrap().iter().copied().collect();
    assert_eq!(weight, vec![1.0, -1.0, 31.75, 0.0, 1.0, 1.0, 2.0]);
    assert!(error_of(&file(false)).contains("has no scales"));
}

#[test]
fn a_model_for_other_inputs_or_classes_is_refused_naming_the_problem() {
    let other = |input: [usize; 3], classes: usize| {
        let spec =
            ModelSpec { name: "other".into(), input, layers: vec![LayerSpec::Flatten, LayerSpec::Dense { units: classes }], classes };
        let network = Network::new(spec, 1).unwrap();
        save_model(&network, StoredDtype::F32, &ModelMetadata::default()).unwrap()
    };
    let message = error_of(&other([1, 1, 2], 7));
    assert!(message.contains("[1, 1, 2]") && message.contains("48x48"), "{message}");
    let message = error_of(&other([3, 48, 48], 7));
    assert!(message.contains("[3, 48, 48]"), "{message}");
    let message = error_of(&other([1, 48, 48], 5));
    assert!(message.contains("scores 5 classes") && message.contains("7"), "{message}");
}

#[test]
fn files_that_do_not_fit_are_refused_with_the_reason() {
    assert!(error_of(b"not a model at all").contains("another kind of file"));
    let weight = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    assert!(error_of(&tiny_file(&weight, vec![7, 1], "other/2")).contains("not supported"));
    assert!(error_of(&tiny_file(&weight[..2], vec![2, 1], "fer-cnn/1")).contains("has shape [2, 1] in the file"));
    assert!(error_of(&tiny_file(&[1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0, 7.0], vec![7, 1], "fer-cnn/1")).contains("NaN"));

    let network = Network::new(preset("seed").unwrap(), 1).unwrap();
    let bytes = save_model(&network, StoredDtype::F32, &ModelMetadata::default()).unwrap();
    assert!(error_of(&bytes[..bytes.len() - 10]).contains("truncated"));
    assert!(error_of(&bytes[..20]).contains("truncated"));

    let no_format = {
        let view = TensorView::new(Dtype::F32, vec![1], &[0, 0, 0, 0]).unwrap();
        safetensors::tensor::serialize(vec![("x", view)], None).unwrap()
    };
    assert!(error_of(&no_format).contains("not a model made by this project"));
}

#[test]
fn the_seed_preset_has_the_papers_shapes() {
    // 48x48x1 → conv 4x4x8 (same) → 48x48x8 → pool 8 → 6x6x8 → conv 2x2x16 → 6x6x16 → pool 3 → 2x2x16 → 64 → 7
    let mut network = Network::new(preset("seed").unwrap(), 1).unwrap();
    let shapes: Vec<Vec<usize>> = network.layer_outputs(faces(1)).iter().map(|t| t.shape()[1..].to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![8, 48, 48],
            vec![8, 48, 48],
            vec![8, 6, 6],
            vec![16, 6, 6],
            vec![16, 6, 6],
            vec![16, 2, 2],
            vec![64],
            vec![64],
            vec![64],
            vec![7]
        ]
    );
    assert_eq!(network.parameter_count(), (4 * 4 * 8 + 8) + (2 * 2 * 8 * 16 + 16) + (64 * 64 + 64) + (64 * 7 + 7));
}

#[test]
fn architectures_that_do_not_fit_are_errors() {
    let spec = |layers| ModelSpec { name: "bad".into(), input: [1, 48, 48], layers, classes: 7 };
    assert!(Network::new(spec(vec![LayerSpec::Dense { units: 7 }]), 1).is_err(), "dense on an image");
    assert!(Network::new(spec(vec![LayerSpec::Flatten, LayerSpec::Dense { units: 5 }]), 1).is_err(), "wrong class count");
    assert!(Network::new(spec(vec![LayerSpec::MaxPool { window: 64, stride: 1 }]), 1).is_err(), "window too large");
    assert!(preset("nope").is_err());
}

//! Integer inference (`Network::set_int8_inference`, `engine::int8`): close to f32, exact
//! where it claims to be (an int8 file's weights, a face alone or in a batch, split across
//! threads or not), and never stale after the weights change.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use fer_cnn::data::FACE_PIXELS;
use fer_cnn::engine::int8::quantise_rows;
use fer_cnn::engine::{LayerSpec, Mode, ModelSpec, Network, Padding, Tensor};
use fer_cnn::inference::{predict_faces, Tta};
use fer_cnn::models::{load_model, preset, save_model, StoredDtype};
use ndarray::{Array2, IxDyn};

fn faces(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = common::Lcg(seed);
    (0..count).flat_map(|i| common::synthetic_face((i % 7) as u8, &mut rng)).collect()
}

fn inputs(faces: &[u8]) -> Tensor {
    let values: Vec<f32> = faces.iter().map(|&p| p as f32 / 255.0 - 0.5).collect();
    Tensor::from_shape_vec(IxDyn(&[faces.len() / FACE_PIXELS, 1, 48, 48]), values).unwrap()
}

fn logits(network: &mut Network, faces: &[u8], int8: bool) -> Array2<f32> {
    network.set_int8_inference(int8);
    network.forward(inputs(faces), &mut Mode::Eval)
}

/// Every case the integer path handles differently: filters not a multiple of the kernel's 4,
/// output widths not a multiple of its 8, odd patch lengths, groups, stride 2, valid padding,
/// batch-norm + ReLU folded into the convolution, a ReLU alone, a convolution with neither.
fn awkward_network() -> Network {
    let conv = |filters, kernel, stride, padding, groups| LayerSpec::Conv2d { filters, kernel, stride, padding, groups };
    let spec = ModelSpec {
        name: "awkward".into(),
        input: [1, 48, 48],
        layers: vec![
            conv(6, 3, 1, Padding::Same, 1),
            LayerSpec::BatchNorm,
            LayerSpec::Relu,
            conv(10, 4, 2, Padding::Valid, 2),
            LayerSpec::Relu,
            LayerSpec::MaxPool { window: 2, stride: 2 },
            conv(5, 1, 1, Padding::Valid, 1),
            LayerSpec::Flatten,
            LayerSpec::Dense { units: 7 },
        ],
        classes: 7,
    };
    let mut network = Network::new(spec, 3).unwrap();
    // Batch-norm statistics that are not the identity, so that folding them in is tested.
    for (name, tensor) in network.named_tensors_mut() {
        if name.starts_with("layers.1.") {
            let channels = tensor.len();
            let values: Vec<f32> = (0..channels)
                .map(|c| match name.as_str() {
                    "layers.1.running_mean" => 0.1 * c as f32 - 0.2,
                    "layers.1.running_var" => 0.5 + 0.3 * c as f32,
                    "layers.1.gamma" => 1.5 - 0.2 * c as f32,
                    _ => 0.05 * c as f32,
                })
                .collect();
            *tensor = Tensor::from_shape_vec(tensor.raw_dim(), values).unwrap();
        }
    }
    network
}

fn largest_difference(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn largest_magnitude(a: &Array2<f32>) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn with_int8_weights_integer_inference_is_f32_within_activation_rounding() {
    // Weights already 8-bit (an int8 file): what is left is rounding activations to 16 bits.
    let bytes = save_model(&awkward_network(), StoredDtype::Int8, &Default::default()).unwrap();
    let mut network = load_model(&bytes).unwrap().network;
    let faces = faces(5, 1);
    let exact = logits(&mut network, &faces, false);
    let integer = logits(&mut network, &faces, true);
    let difference = largest_difference(&exact, &integer);
    // A wrong layout, group, bias or folded batch-norm would move the logits by their own size.
    assert!(difference < 1e-3 * largest_magnitude(&exact), "logits differ by {difference} (largest {})", largest_magnitude(&exact));
    assert!(difference > 0.0, "the integer path did not run");
}

#[test]
fn with_f32_weights_integer_inference_adds_their_rounding() {
    let mut network = awkward_network();
    let faces = faces(5, 1);
    let exact = logits(&mut network, &faces, false);
    let integer = logits(&mut network, &faces, true);
    let difference = largest_difference(&exact, &integer);
    assert!(difference < 0.03 * largest_magnitude(&exact), "logits differ by {difference} (largest {})", largest_magnitude(&exact));
}

#[test]
fn the_default_model_gives_nearly_the_same_probabilities() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/www/models/default.safetensors")).unwrap();
    let loaded = load_model(&bytes).unwrap();
    assert_eq!(loaded.stored, StoredDtype::Int8);
    let mut network = loaded.network;
    let faces = faces(14, 2);
    let exact = predict_faces(&mut network, &faces, Tta::None);
    network.set_int8_inference(true);
    let integer = predict_faces(&mut network, &faces, Tta::None);
    let difference = largest_difference(&exact, &integer);
    assert!(difference < 2e-3, "probabilities differ by {difference}");
}

#[test]
fn a_face_gets_the_same_bits_alone_or_in_a_batch() {
    // Each face's activations are rounded with its own scale.
    let mut network = awkward_network();
    let faces = faces(4, 3);
    let batch = logits(&mut network, &faces, true);
    for (i, face) in faces.chunks(FACE_PIXELS).enumerate() {
        let alone = logits(&mut network, face, true);
        assert!(alone.row(0).iter().zip(batch.row(i)).all(|(a, b)| a.to_bits() == b.to_bits()), "face {i}");
    }
}

#[test]
fn split_across_threads_or_not_the_bits_are_the_same() {
    // One `deep` face is large enough to split its products over a pool of 4 (integer sums
    // are exact, so any split gives the same bits).
    let mut network = Network::new(preset("deep").unwrap(), 5).unwrap();
    let face = faces(1, 4);
    let mut run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| logits(&mut network, &face, true))
    };
    let (one, four) = (run(1), run(4));
    assert!(one.iter().zip(&four).all(|(a, b)| a.to_bits() == b.to_bits()), "{one} vs {four}");
}

#[test]
fn new_weights_are_rounded_again() {
    let mut network = awkward_network();
    let faces = faces(2, 5);
    let before = logits(&mut network, &faces, true);
    for (name, tensor) in network.named_tensors_mut() {
        if name == "layers.0.weight" {
            tensor.mapv_inplace(|w| -w);
        }
    }
    let exact = logits(&mut network, &faces, false);
    let integer = logits(&mut network, &faces, true);
    assert!(largest_difference(&before, &integer) > 0.01, "the old rounded weights were used");
    assert!(largest_difference(&exact, &integer) < 0.03 * largest_magnitude(&exact));
}

#[test]
fn an_int8_files_weights_are_rounded_back_to_the_stored_integers() {
    let network = awkward_network();
    let loaded = load_model(&save_model(&network, StoredDtype::Int8, &Default::default()).unwrap()).unwrap();
    assert_eq!(loaded.stored, StoredDtype::Int8);
    for index in [0, 3, 6] {
        let weight = |network: &Network| network.layer_tensors(index)[0].1.clone();
        let (original, reloaded) = (weight(&network), weight(&loaded.network));
        let rows = original.shape()[0];
        let (stored, stored_scales) = quantise_rows(original.as_slice().unwrap(), rows);
        let (again, scales) = quantise_rows(reloaded.as_slice().unwrap(), rows);
        assert_eq!(stored, again, "layer {index}");
        for (a, b) in stored_scales.iter().zip(&scales) {
            assert!((a - b).abs() <= a.abs() * 1e-6, "layer {index}: scale {a} became {b}");
        }
    }
    let f16 = load_model(&save_model(&network, StoredDtype::F16, &Default::default()).unwrap()).unwrap();
    assert_eq!(f16.stored, StoredDtype::F16);
}

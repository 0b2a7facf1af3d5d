//! Temperature scaling (src/confidence.rs): the fit recovers a known temperature, the
//! calibration error tells calibrated from over-confident probabilities, the uncertain
//! threshold follows its rule, and a model file's temperature reaches every prediction.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, HashMap};

use fer_cnn::confidence::{
    choose_uncertain_below, fit_temperature, negative_log_likelihood, score_probabilities, split_at_thresholds, threshold_grid,
};
use fer_cnn::data::{Dataset, Usage, FACE_PIXELS};
use fer_cnn::engine::loss::softmax;
use fer_cnn::engine::{Network, OptimizerKind, Rng, Tensor};
use fer_cnn::inference::{argmax, face_logits, predict_faces, Tta};
use fer_cnn::models::{export_onnx, import_onnx, load_model, preset, save_model, with_metadata, ModelMetadata, StoredDtype};
use fer_cnn::train::{TrainConfig, Trainer};
use ndarray::{Array2, Axis, IxDyn};
use rand::{Rng as _, SeedableRng};
use safetensors::SafeTensors;

/// Logits of a model that is calibrated by construction: each label is drawn from
/// softmax(logits), so a face given p is right with probability p.
fn calibrated_logits(n: usize, seed: u64) -> (Array2<f32>, Vec<u8>) {
    let mut rng = Rng::seed_from_u64(seed);
    // Spread like a trained model's: some faces near-certain, some near-uniform.
    let logits = Array2::from_shape_fn((n, 7), |_| rng.random_range(-3.0f32..3.0) * rng.random_range(0.2f32..1.5));
    let probs = softmax(logits.view());
    let labels = probs
        .axis_iter(Axis(0))
        .map(|p| {
            let mut u: f32 = rng.random();
            p.iter()
                .position(|&q| {
                    u -= q;
                    u < 0.0
                })
                .unwrap_or(6) as u8
        })
        .collect();
    (logits, labels)
}

#[test]
fn the_fit_recovers_the_temperature_that_scaled_calibrated_logits() {
    let (logits, labels) = calibrated_logits(20_000, 1);
    assert!((fit_temperature(logits.view(), &labels) - 1.0).abs() < 0.05);
    for scale in [0.4f32, 2.5] {
        // Logits multiplied by `scale` are over-confident (above 1) or under-confident (below):
        // dividing them by `scale` gives back the calibrated ones.
        let scaled = &logits * scale;
        let fitted = fit_temperature(scaled.view(), &labels);
        assert!((fitted / scale - 1.0).abs() < 0.05, "fitted {fitted}, scaled by {scale}");
        // It is the likelihood's minimum.
        let nll = |t: f32| negative_log_likelihood(scaled.view(), &labels, t as f64);
        assert!(nll(fitted) < nll(fitted * 1.05) && nll(fitted) < nll(fitted / 1.05) && nll(fitted) < nll(1.0));
    }
}

#[test]
fn the_calibration_error_is_small_for_calibrated_and_large_for_over_confident_probabilities() {
    let (logits, labels) = calibrated_logits(20_000, 2);
    let calibrated = score_probabilities(softmax(logits.view()).view(), &labels);
    assert!(calibrated.ece < 0.02, "calibrated ECE {}", calibrated.ece);
    let over_confident = &logits * 3.0;
    let before = score_probabilities(softmax(over_confident.view()).view(), &labels);
    assert!(before.ece > 0.15, "over-confident ECE {}", before.ece);
    let t = fit_temperature(over_confident.view(), &labels);
    let after = score_probabilities(softmax((&over_confident / t).view()).view(), &labels);
    assert!(after.ece < 0.02 && after.loss < before.loss, "after: ECE {}, NLL {} (before {})", after.ece, after.loss, before.loss);
    assert_eq!(after.confusion, before.confusion, "the temperature moves no face's class");
}

/// One row per face: its top probability on class 0, the rest spread evenly.
fn probabilities_with_top(tops: &[f32]) -> Array2<f32> {
    Array2::from_shape_fn((tops.len(), 7), |(i, k)| if k == 0 { tops[i] } else { (1.0 - tops[i]) / 6.0 })
}

#[test]
fn the_uncertain_threshold_is_the_largest_just_below_which_faces_are_mostly_wrong() {
    let probs = probabilities_with_top(&[0.32, 0.43, 0.47, 0.63, 0.85]);
    // Wrong for 0.32 and 0.43, right (class 0) for the rest. Within 0.1 below 0.47 lies 0.43
    // alone (wrong); below 0.48, 0.43 and 0.47 (half right), and above that only right faces.
    let labels = [3, 5, 0, 0, 0];
    let splits = split_at_thresholds(probs.view(), &labels, &threshold_grid());
    assert_eq!(choose_uncertain_below(&splits), Some(0.47));
    let at = splits.iter().find(|s| s.threshold == 0.47).unwrap();
    assert_eq!((at.below.n, at.just_below.n, at.at_or_above.n), (2, 1, 3));
    assert_eq!((at.below.accuracy, at.just_below.accuracy, at.at_or_above.accuracy), (0.0, 0.0, 1.0));
    // Faces all right: nothing to mark.
    let splits = split_at_thresholds(probs.view(), &[0; 5], &threshold_grid());
    assert_eq!(choose_uncertain_below(&splits), None);
}

#[test]
fn temperature_and_uncertain_threshold_round_trip_through_the_metadata() {
    let metadata = ModelMetadata { temperature: Some(1.2345678), uncertain_below: Some(0.55), ..ModelMetadata::default() };
    let map = metadata.to_map();
    assert_eq!(map.get("temperature").map(String::as_str), Some("1.2345678"));
    assert_eq!(map.get("uncertain_below").map(String::as_str), Some("0.55"));
    assert_eq!(ModelMetadata::from_map(map), metadata);
    // Values that cannot be a temperature or a probability are kept as text, not applied.
    let odd: HashMap<String, String> = [("temperature", "-2"), ("uncertain_below", "1.5")].map(|(k, v)| (k.into(), v.into())).into();
    let read = ModelMetadata::from_map(odd);
    assert_eq!((read.temperature, read.uncertain_below), (None, None));
    assert_eq!(read.other, BTreeMap::from([("temperature".into(), "-2".into()), ("uncertain_below".into(), "1.5".into())]));
    let mut forgotten = metadata.clone();
    forgotten.forget_measurements();
    assert_eq!((forgotten.temperature, forgotten.uncertain_below), (None, None));
}

fn faces(n: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(&[n, 1, 48, 48]), |idx| ((idx[0] * 31 + idx[2] * 7 + idx[3] * 3) % 255) as f32 / 64.0 - 2.0)
}

/// A `deep` network whose batch-norm statistics are measured, so that its logits are spread.
fn network() -> Network {
    let mut network = Network::new(preset("deep").unwrap(), 3).unwrap();
    network.recalibrate_batch_norm([faces(16)]);
    network
}

fn largest_difference(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn a_model_files_temperature_divides_the_logits_in_every_prediction() {
    let network = network();
    for dtype in [StoredDtype::F32, StoredDtype::Int8] {
        let metadata = ModelMetadata { temperature: Some(2.5), ..ModelMetadata::default() };
        let mut loaded = load_model(&save_model(&network, dtype, &metadata).unwrap()).unwrap();
        assert_eq!(loaded.network.temperature(), 2.5);
        for int8_inference in [false, true] {
            loaded.network.set_int8_inference(int8_inference);
            let logits = loaded.network.logits(faces(6));
            let by_hand = softmax((&logits / 2.5).view());
            let predicted = loaded.network.predict(faces(6));
            assert!(largest_difference(&predicted, &by_hand) < 1e-6, "{dtype:?}, int8 inference {int8_inference}");
            let untempered = softmax(logits.view());
            assert!(largest_difference(&predicted, &untempered) > 1e-3, "the temperature changes the probabilities");
            for (a, b) in predicted.axis_iter(Axis(0)).zip(untempered.axis_iter(Axis(0))) {
                assert_eq!(argmax(a), argmax(b));
            }
            // The path the camera, `Model.predict` and `fer eval` take, from a face's bytes.
            let face_bytes: Vec<u8> = (0..3 * FACE_PIXELS).map(|i| (i * 37 % 251) as u8).collect();
            let by_hand = softmax((&face_logits(&mut loaded.network, &face_bytes) / 2.5).view());
            assert!(largest_difference(&predict_faces(&mut loaded.network, &face_bytes, Tta::None), &by_hand) < 1e-6);
        }
    }
}

#[test]
fn rewriting_the_metadata_keeps_every_tensor_byte() {
    let mut network = network();
    let original = save_model(&network, StoredDtype::Int8, &ModelMetadata { train_rows: Some(7), ..ModelMetadata::default() }).unwrap();
    let metadata = ModelMetadata { train_rows: Some(7), temperature: Some(0.8), uncertain_below: Some(0.4), ..ModelMetadata::default() };
    let rewritten = with_metadata(&original, &metadata).unwrap();
    let (before, after) = (SafeTensors::deserialize(&original).unwrap(), SafeTensors::deserialize(&rewritten).unwrap());
    let mut names = before.names();
    names.sort();
    let mut after_names = after.names();
    after_names.sort();
    assert_eq!(names, after_names);
    for name in names {
        let (a, b) = (before.tensor(name).unwrap(), after.tensor(name).unwrap());
        assert_eq!((a.dtype(), a.shape(), a.data()), (b.dtype(), b.shape(), b.data()), "{name}");
    }
    let loaded = load_model(&rewritten).unwrap();
    assert_eq!(loaded.metadata, metadata);
    assert_eq!(loaded.stored, StoredDtype::Int8);
    network.set_temperature(0.8).unwrap();
    let mut loaded_network = loaded.network;
    let stored = load_model(&original).unwrap().network.named_tensors().into_iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
    assert!(loaded_network.named_tensors().into_iter().zip(&stored).all(|((_, a), b)| a == b));
    assert_eq!(loaded_network.temperature(), 0.8);
    assert!(largest_difference(&loaded_network.predict(faces(2)), &softmax((&loaded_network.logits(faces(2)) / 0.8).view())) < 1e-6);
}

#[test]
fn onnx_export_scales_the_class_scores_and_import_reads_the_temperature_back() {
    let mut network = network();
    network.set_temperature(1.7).unwrap();
    let metadata = ModelMetadata { temperature: Some(1.7), ..ModelMetadata::default() };
    let mut imported = import_onnx(&export_onnx(&network, &metadata).unwrap()).unwrap();
    assert_eq!(imported.network.temperature(), 1.7);
    assert_eq!(imported.metadata, metadata);
    assert!(largest_difference(&imported.network.predict(faces(3)), &network.predict(faces(3))) < 1e-6);
}

#[test]
fn training_or_remeasuring_statistics_sets_the_temperature_back_to_one() {
    let mut network = network();
    network.set_temperature(2.0).unwrap();
    network.recalibrate_batch_norm([faces(8)]);
    assert_eq!(network.temperature(), 1.0);
    network.set_temperature(2.0).unwrap();
    let mut data = Dataset::new();
    data.push(&[9; FACE_PIXELS], 0, Usage::Training).unwrap();
    let config = TrainConfig { epochs: 1, batch_size: 1, optimizer: OptimizerKind::adam(), ..TrainConfig::default() };
    let trainer = Trainer::new(network, config, &data, vec![0]).unwrap();
    assert_eq!(trainer.network.temperature(), 1.0);
    assert!(Network::new(preset("seed").unwrap(), 0).unwrap().set_temperature(0.0).is_err());
}

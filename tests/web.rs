//! Browser tests (`wasm-pack test --headless --firefox -- --test web`): the wasm API end to end
//! in a real browser, and the same numbers as the native build.

#![cfg(target_arch = "wasm32")]

mod common;
#[path = "common/known_answers.rs"]
mod known_answers;

use fer_cnn::train::{CalibrationConfig, TrainConfig};
use fer_cnn::web::{Calibration, DatasetLoader, Model, Training};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The message of the `Error` a wasm API call threw.
fn message_of(error: wasm_bindgen::JsError) -> String {
    let error = wasm_bindgen::JsValue::from(error);
    js_sys::Reflect::get(&error, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_default()
}

fn load(csv: &str, chunk: usize) -> fer_cnn::web::FaceDataset {
    let mut loader = DatasetLoader::new();
    for piece in csv.as_bytes().chunks(chunk) {
        loader.push(piece).unwrap();
    }
    loader.finish().unwrap_or_else(|_| panic!("synthetic CSV loads"))
}

#[wasm_bindgen_test]
fn same_predictions_as_native_within_1e_5() {
    common::assert_matches_fixture(&common::reference_probabilities(), &common::reference_fixture());
}

#[wasm_bindgen_test]
fn same_integer_predictions_as_native_within_1e_5() {
    common::assert_matches_fixture(&common::reference_probabilities_int8(), &common::reference_fixture_int8());
}

#[wasm_bindgen_test]
fn pytorchs_known_answers_hold_in_the_browser() {
    // The native test's fixtures and tolerances (tests/known_answers.rs).
    known_answers::assert_known_answers("seed", known_answers::SEED);
    known_answers::assert_known_answers("batch_norm", known_answers::BATCH_NORM);
}

#[wasm_bindgen_test]
fn the_simd128_integer_kernel_gives_the_portable_kernels_sums() {
    use fer_cnn::engine::int8::{block_sums, block_sums_portable, pair, Gather};
    let mut rng = common::Lcg(9);
    let weight = |rng: &mut common::Lcg| (rng.next() % 255) as i16 - 127;
    let activation = |rng: &mut common::Lcg| [i16::MAX, -i16::MAX, (rng.next() % 65535) as i16][rng.next() as usize % 3];
    for pairs in [1, 5, 258] {
        let weights: Vec<u32> = (0..pairs * 4).map(|_| pair(weight(&mut rng), weight(&mut rng))).collect();
        let input: Vec<u32> = (0..pairs * 8 + 16).map(|_| pair(activation(&mut rng), activation(&mut rng))).collect();
        // Offsets in no order, overlapping, at any alignment, as a convolution's taps are.
        let offsets: Vec<usize> = (0..pairs).map(|_| rng.next() as usize % (input.len() - 11)).collect();
        let inputs = Gather::new(&input, &offsets);
        for base in [0, 3] {
            assert_eq!(block_sums(&weights, &inputs, base), block_sums_portable(&weights, &inputs, base), "{pairs} pairs");
        }
    }
}

#[wasm_bindgen_test]
fn the_default_model_classifies_in_integer_arithmetic() {
    let bytes = include_bytes!("../www/models/default.safetensors");
    let mut model = Model::from_bytes(bytes).unwrap_or_else(|_| panic!("the default model loads"));
    assert_eq!(model.stored_precision(), "int8");
    let mut rng = common::Lcg(11);
    let faces: Vec<u8> = (0..3).flat_map(|i| common::synthetic_face(i, &mut rng)).collect();
    let exact = model.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts"));
    model.set_int8_inference(true);
    let integer = model.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts"));
    let difference = exact.iter().zip(&integer).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(difference > 0.0 && difference < 2e-3, "probabilities differ by {difference}");
}

#[wasm_bindgen_test]
fn a_models_temperature_and_uncertain_threshold_are_read_from_its_file() {
    let bytes = include_bytes!("../www/models/default.safetensors");
    let model = Model::from_bytes(bytes).unwrap_or_else(|_| panic!("the default model loads"));
    let metadata = fer_cnn::models::load_model(bytes).unwrap_or_else(|_| panic!("loads natively")).metadata;
    assert_eq!(Some(model.temperature()), metadata.temperature);
    assert!(model.uncertain_below().is_some() && model.uncertain_below() == metadata.uncertain_below);
    let fresh = Model::from_preset("seed", 1).unwrap_or_else(|_| panic!("preset builds"));
    assert_eq!((fresh.temperature(), fresh.uncertain_below()), (1.0, None));
}

#[wasm_bindgen_test]
fn csv_in_odd_chunks_with_bad_rows_is_parsed_and_reported() {
    let mut csv = common::synthetic_csv(2, &["Training", "PublicTest", "PrivateTest"], 5);
    csv += "7,1 2 3,Training\n";
    let data = load(&csv, 13);
    assert_eq!(data.length(), 42);
    assert_eq!(data.rows("PublicTest").unwrap().len(), 14);
    assert_eq!(data.usage(0).unwrap(), "Training");
    assert_eq!(data.face(3).unwrap().len(), 2304);
    assert!(data.face(42).is_err());
    let report = js_sys::JSON::stringify(&data.report().unwrap()).unwrap().as_string().unwrap();
    assert!(report.contains("\"rows_bad\":1"), "{report}");
    assert!(report.contains("\"line\":44"), "{report}");
}

#[wasm_bindgen_test]
fn train_predict_save_and_load_in_the_browser() {
    let csv = common::synthetic_csv(6, &["Training", "PublicTest"], 9);
    let data = load(&csv, 4099);
    let config = TrainConfig { epochs: 3, batch_size: 14, lr: 3e-3, ..TrainConfig::default() };
    let config = serde_wasm_bindgen::to_value(&config).unwrap();
    let model = Model::from_preset("seed", 1).unwrap_or_else(|_| panic!("preset builds"));
    assert!(Training::new(model, &data, config.clone(), None, "sideways").is_err(), "an unknown test-time augmentation is refused");
    let model = Model::from_preset("seed", 1).unwrap_or_else(|_| panic!("preset builds"));
    let mut training = Training::new(model, &data, config, None, "flip").unwrap_or_else(|_| panic!("training starts"));
    assert_eq!(training.train_rows(), 42);
    let field = |report: &wasm_bindgen::JsValue, name: &str| js_sys::Reflect::get(report, &name.into()).unwrap();
    let mut slices = 0;
    loop {
        // Two steps at most, and a slice stops at the end of its epoch (3 steps of 14).
        let report = training.train_slice(&data, 2).unwrap();
        slices += 1;
        if field(&report, "epoch_finished").as_bool() == Some(true) {
            let end = training.end_epoch(&data).unwrap();
            assert_eq!(field(&field(&end, "public_test"), "n").as_f64(), Some(42.0));
        }
        if field(&report, "finished").as_bool() == Some(true) {
            break;
        }
        assert!(slices < 20);
    }
    assert_eq!((slices, training.epochs_completed()), (6, 3));
    let private = training.evaluate(&data, "PrivateTest").unwrap();
    assert!(private.is_null(), "no PrivateTest rows, no evaluation");

    let bytes = training.export(&data, "f32").unwrap_or_else(|_| panic!("model saves"));
    let mut model = Model::from_bytes(&bytes).unwrap_or_else(|_| panic!("model loads"));
    let faces: Vec<u8> = (0..2).flat_map(|r| data.face(r).unwrap()).collect();
    let probs = model.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts"));
    assert_eq!(probs.len(), 14);
    for face in probs.chunks(7) {
        assert!((face.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let exact = model.to_bytes("f32").unwrap_or_else(|_| panic!("saves"));
    let mut reloaded = Model::from_bytes(&exact).unwrap_or_else(|_| panic!("loads"));
    assert_eq!(reloaded.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts")), probs);

    // f16 and int8 files (the page's smaller downloads; the default model ships as int8) load
    // and predict nearly the same.
    for (precision, tolerance) in [("f16", 0.002f32), ("int8", 0.02)] {
        let smaller = model.to_bytes(precision).unwrap_or_else(|_| panic!("saves as {precision}"));
        assert!(smaller.len() < exact.len(), "{precision}: {} bytes against {} in f32", smaller.len(), exact.len());
        let mut rounded = Model::from_bytes(&smaller).unwrap_or_else(|_| panic!("{precision} loads"));
        let rounded_probs = rounded.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts"));
        let largest = rounded_probs.iter().zip(&probs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(largest < tolerance, "{precision} moved a probability by {largest}");
    }
    assert!(model.to_bytes("f8").is_err(), "an unknown precision is refused");

    assert!(Model::from_bytes(&bytes[..bytes.len() / 2]).is_err(), "a truncated file is refused");
    assert!(model.predict(&faces[..100], "none").is_err(), "a partial face is refused");
}

#[wasm_bindgen_test]
fn a_merged_model_averages_its_members_in_the_browser() {
    use fer_cnn::engine::Network;
    use fer_cnn::inference::{predict_faces, Tta};
    use fer_cnn::models::{merge, preset, save_model, StoredDtype};
    let deep = || preset("deep").unwrap_or_else(|_| panic!("deep is a preset"));
    let mut members: Vec<Network> = [1, 2].map(|seed| Network::new(deep(), seed).unwrap_or_else(|_| panic!("builds"))).into();
    let merged = merge(&members).unwrap_or_else(|_| panic!("merges"));
    let bytes = save_model(&merged, StoredDtype::F32, &Default::default()).unwrap_or_else(|_| panic!("saves"));
    let mut model = Model::from_bytes(&bytes).unwrap_or_else(|_| panic!("a merged model loads"));
    let faces: Vec<u8> = (0..2 * 48 * 48).map(|i| (i * 37 % 251) as u8).collect();
    let probs = model.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts"));
    // log-probabilities are logits less a per-face constant, so their mean's softmax is the
    // softmax of the mean logits.
    let mut mean_log = ndarray::Array2::<f32>::zeros((2, 7));
    for member in &mut members {
        mean_log += &(predict_faces(member, &faces, Tta::None).mapv(f32::ln) / 2.0);
    }
    let expected = fer_cnn::engine::loss::softmax(mean_log.view());
    for (i, (got, want)) in probs.iter().zip(expected.iter()).enumerate() {
        assert!((got - want).abs() < 1e-5, "probability {i}: merged {got} vs members {want}");
    }
}

#[wasm_bindgen_test]
fn batch_norm_statistics_are_recalibrated_in_the_browser() {
    let data = load(&common::synthetic_csv(2, &["Training", "PublicTest"], 3), 1 << 16);
    let config = serde_wasm_bindgen::to_value(&TrainConfig { epochs: 1, batch_size: 14, ..TrainConfig::default() }).unwrap();
    let start = |preset: &str| {
        let model = Model::from_preset(preset, 1).unwrap_or_else(|_| panic!("preset builds"));
        let mut training = Training::new(model, &data, config.clone(), None, "none").unwrap_or_else(|_| panic!("training starts"));
        training.train_slice(&data, 1).unwrap_or_else(|_| panic!("trains"));
        training
    };
    let end_epoch = |training: &mut Training| -> serde_json::Value {
        serde_wasm_bindgen::from_value(training.end_epoch(&data).unwrap_or_else(|_| panic!("ends the epoch"))).unwrap()
    };
    assert_eq!(end_epoch(&mut start("seed"))["recalibrated_on"], 0, "no batch-norm, nothing to recalibrate");

    let mut training = start("deep");
    let test_rows = [14, 15, 16];
    let before = training.predict(&data, &test_rows).unwrap_or_else(|_| panic!("predicts"));
    let report = end_epoch(&mut training);
    assert_eq!(report["recalibrated_on"], 14);
    assert_eq!(report["public_test"]["n"], 14, "PublicTest evaluated");
    let after = training.predict(&data, &test_rows).unwrap_or_else(|_| panic!("predicts"));
    assert_ne!(before, after, "one training step's running statistics are not the measured ones");
    // The measurement does not depend on the statistics it replaces.
    end_epoch(&mut training);
    assert_eq!(training.predict(&data, &test_rows).unwrap_or_else(|_| panic!("predicts")), after);
}

#[wasm_bindgen_test]
fn a_model_for_other_inputs_or_classes_is_refused_without_a_trap_and_the_current_model_stays() {
    use fer_cnn::engine::{LayerSpec, ModelSpec, Network};
    use fer_cnn::models::{save_model, StoredDtype};
    let mut current = Model::from_preset("seed", 1).unwrap_or_else(|_| panic!("preset builds"));
    let face = vec![128u8; 48 * 48];
    let before = current.predict(&face, "none").unwrap_or_else(|_| panic!("predicts"));
    let file = |input: [usize; 3], classes: usize| {
        let spec =
            ModelSpec { name: "other".into(), input, layers: vec![LayerSpec::Flatten, LayerSpec::Dense { units: classes }], classes };
        save_model(&Network::new(spec, 1).unwrap_or_else(|_| panic!("builds")), StoredDtype::F32, &Default::default())
            .unwrap_or_else(|_| panic!("saves"))
    };
    for (bytes, expected) in [(file([1, 1, 2], 7), "48x48"), (file([1, 48, 48], 5), "scores 5 classes")] {
        let message = match Model::from_bytes(&bytes) {
            Ok(_) => panic!("a model for other faces must be refused"),
            Err(error) => message_of(error),
        };
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(current.predict(&face, "none").unwrap_or_else(|_| panic!("still predicts")), before);
}

#[wasm_bindgen_test]
fn hostile_model_files_are_refused_in_the_browser_without_a_trap() {
    let mut current = Model::from_preset("seed", 1).unwrap_or_else(|_| panic!("preset builds"));
    let face = vec![128u8; 48 * 48];
    let before = current.predict(&face, "none").unwrap_or_else(|_| panic!("predicts"));
    for (what, bytes, expected) in common::hostile::hostile_files() {
        let message = match Model::from_bytes(&bytes) {
            Ok(_) => panic!("{what}: loaded"),
            Err(error) => message_of(error),
        };
        assert!(message.contains(expected), "{what}: {message}");
    }
    assert_eq!(current.predict(&face, "none").unwrap_or_else(|_| panic!("still predicts")), before);
}

#[wasm_bindgen_test]
fn the_default_model_is_calibrated_to_shifted_faces_in_the_browser() {
    let model = Model::from_bytes(include_bytes!("../www/models/default.safetensors")).unwrap_or_else(|_| panic!("loads"));
    let mut rng = common::Lcg(5);
    let (mut faces, mut labels) = (Vec::new(), Vec::new());
    for label in 0..7u8 {
        for _ in 0..8 {
            faces.extend(common::shift::shifted_face(&common::synthetic_face(label, &mut rng), &mut rng));
            labels.push(label);
        }
    }
    let options = CalibrationConfig { views: 2, epochs: 20, ..CalibrationConfig::default() };
    let options = serde_wasm_bindgen::to_value(&options).unwrap_or_else(|_| panic!("options"));
    let mut calibration = Calibration::new(model, &faces, &labels, options).unwrap_or_else(|e| panic!("{}", message_of(e)));
    let phase = |progress: &wasm_bindgen::JsValue| js_sys::Reflect::get(progress, &"phase".into()).ok().and_then(|p| p.as_string());
    let mut steps = 0;
    while phase(&calibration.advance().unwrap_or_else(|_| panic!("advances"))).as_deref() != Some("finished") {
        steps += 1;
        assert!(steps < 1000, "a calibration finishes");
    }
    let report = calibration.report().unwrap_or_else(|_| panic!("report"));
    let held_out = js_sys::Reflect::get(&report, &"held_out_accuracy".into()).unwrap_or_else(|_| panic!("scored"));
    let accuracy = |when: &str| {
        let evaluation = js_sys::Reflect::get(&held_out, &when.into()).unwrap_or_else(|_| panic!("{when}"));
        js_sys::Reflect::get(&evaluation, &"accuracy".into()).ok().and_then(|a| a.as_f64()).unwrap_or_else(|| panic!("{when} accuracy"))
    };
    assert!(accuracy("after") >= accuracy("before") + 0.3, "{} → {}", accuracy("before"), accuracy("after"));
    let bytes = calibration.export().unwrap_or_else(|_| panic!("exports"));
    let mut calibrated = Model::from_bytes(&bytes).unwrap_or_else(|_| panic!("the calibrated model loads"));
    let probs = calibrated.predict(&faces[..48 * 48], "none").unwrap_or_else(|_| panic!("predicts"));
    assert_eq!(probs.len(), 7);
}

/// A PyTorch 2.x export (reference/torch/onnx_exporters.py): the graph and its `.onnx.data`
/// file together give PyTorch's probabilities; the graph alone, or with another file, is
/// refused naming the file it needs.
#[wasm_bindgen_test]
fn an_onnx_graph_loads_with_its_external_data_file() {
    let graph = include_bytes!("fixtures/pytorch_onnx/dynamo.onnx");
    let data = include_bytes!("fixtures/pytorch_onnx/dynamo.onnx.data");
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/pytorch_onnx/expected.json")).unwrap_or_else(|_| panic!("JSON"));
    let numbers = |key: &str| -> Vec<f64> {
        expected[key]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().into_iter().flatten().filter_map(|v| v.as_f64()))
            .collect()
    };
    let faces: Vec<u8> = numbers("faces").iter().map(|&v| v as u8).collect();
    let mut model = Model::from_onnx_files(graph, "dynamo.onnx.data", data).unwrap_or_else(|e| panic!("loads: {}", message_of(e)));
    let ours = model.predict(&faces, "none").unwrap_or_else(|_| panic!("predicts"));
    let theirs = numbers("probabilities");
    assert_eq!(ours.len(), theirs.len());
    let difference = ours.iter().zip(&theirs).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(difference < 1e-6, "differs from PyTorch by {difference}");
    let alone = Model::from_bytes(graph).err().map(message_of).unwrap_or_default();
    assert!(alone.contains("'dynamo.onnx.data'") && alone.contains("select both files"), "{alone}");
    let other = Model::from_onnx_files(graph, "weights.bin", data).err().map(message_of).unwrap_or_default();
    assert!(other.contains("the file given with it is 'weights.bin'"), "{other}");
}

#[wasm_bindgen_test]
fn face_quality_flags_what_a_crop_is_past_and_refuses_a_wrong_size() {
    use fer_cnn::face::quality::{DARK_BRIGHTNESS, SMALL_FACE_PX};
    let get = |value: &wasm_bindgen::JsValue, key: &str| js_sys::Reflect::get(value, &key.into()).unwrap();
    let dark_flat = vec![(DARK_BRIGHTNESS * 255.0 / 2.0) as u8; 48 * 48];
    let quality = fer_cnn::web::face_quality(&dark_flat, SMALL_FACE_PX / 2.0).unwrap();
    let flags: Vec<String> = js_sys::Array::from(&get(&quality, "flags")).iter().filter_map(|f| f.as_string()).collect();
    assert_eq!(flags, ["small", "dark", "low-contrast"]);
    assert_eq!(get(&quality, "contrast").as_f64(), Some(0.0));
    assert_eq!(get(&quality, "size").as_f64(), Some((SMALL_FACE_PX / 2.0) as f64));
    let thresholds = fer_cnn::web::quality_thresholds();
    assert_eq!(get(&thresholds, "smallFacePx").as_f64(), Some(SMALL_FACE_PX as f64));
    assert!(message_of(fer_cnn::web::face_quality(&[0; 100], 50.0).unwrap_err()).contains("2304 bytes, got 100"));
}

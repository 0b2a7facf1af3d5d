//! Shared by the native and the browser tests: a small synthetic FER2013-format CSV that a
//! network can learn, and one fixed scenario (parse in odd chunks, train a few steps, save,
//! load, predict) whose probabilities must agree natively and in wasm.

#![allow(dead_code)] // each test crate uses a different part

pub mod hostile;
pub mod shift;

use fer_cnn::data::{Fer2013Parser, Parsed, FACE_PIXELS, FACE_SIDE};
use fer_cnn::engine::{Network, OptimizerKind};
use fer_cnn::inference::{predict_faces, Tta};
use fer_cnn::models::{load_model, preset, save_model, StoredDtype};
use fer_cnn::train::{TrainConfig, Trainer};

/// A tiny deterministic generator, so the data is the same on every platform.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// A face of class `label`: noise, plus a bright 12x12 square whose position encodes the label.
pub fn synthetic_face(label: u8, rng: &mut Lcg) -> Vec<u8> {
    let (top, left) = (6 + (label as usize / 4) * 20, 4 + (label as usize % 4) * 10);
    let mut face = vec![0u8; FACE_PIXELS];
    for (i, pixel) in face.iter_mut().enumerate() {
        let (y, x) = (i / FACE_SIDE, i % FACE_SIDE);
        let inside = (top..top + 12).contains(&y) && (left..left + 12).contains(&x);
        *pixel = if inside { 200 } else { 40 } + (rng.next() % 40) as u8;
    }
    face
}

/// `emotion,pixels,Usage` rows: `per_class` faces of every class for each usage given.
pub fn synthetic_csv(per_class: usize, usages: &[&str], seed: u64) -> String {
    let mut rng = Lcg(seed);
    let mut csv = String::from("emotion,pixels,Usage\n");
    for usage in usages {
        for i in 0..per_class * 7 {
            let label = (i % 7) as u8;
            let pixels: Vec<String> = synthetic_face(label, &mut rng).iter().map(|p| p.to_string()).collect();
            csv += &format!("{label},{},{usage}\n", pixels.join(" "));
        }
    }
    csv
}

pub fn parse_in_chunks(bytes: &[u8], chunk: usize) -> Parsed {
    let mut parser = Fer2013Parser::new();
    for piece in bytes.chunks(chunk) {
        parser.push(piece);
    }
    parser.finish().expect("synthetic CSV parses")
}

/// Probabilities of the first 3 faces after: parsing in 7-byte chunks, 6 SGD steps of the
/// `seed` preset with augmentation, an f32 save and load. Same numbers on every platform.
pub fn reference_probabilities() -> Vec<f32> {
    reference_run(false)
}

/// [`reference_probabilities`] classified in integer arithmetic (`Network::set_int8_inference`).
pub fn reference_probabilities_int8() -> Vec<f32> {
    reference_run(true)
}

fn reference_run(int8_inference: bool) -> Vec<f32> {
    let csv = synthetic_csv(4, &["Training"], 2024);
    let parsed = parse_in_chunks(csv.as_bytes(), 7);
    let data = parsed.dataset;
    let config = TrainConfig {
        epochs: 1,
        batch_size: 8,
        lr: 0.05,
        optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: true },
        weight_decay: 1e-4,
        augment: Some(Default::default()),
        seed: 3,
        ..TrainConfig::default()
    };
    let rows: Vec<usize> = (0..data.len()).collect();
    let network = Network::new(preset("seed").unwrap(), 42).unwrap();
    let mut trainer = Trainer::new(network, config, &data, rows).unwrap();
    for _ in 0..6 {
        trainer.train_step(&data);
    }
    let bytes = save_model(&trainer.network, StoredDtype::F32, &Default::default()).unwrap();
    let mut network = load_model(&bytes).unwrap().network;
    network.set_int8_inference(int8_inference);
    let faces: Vec<u8> = (0..3).flat_map(|r| data.face(r).to_vec()).collect();
    predict_faces(&mut network, &faces, Tta::None).iter().copied().collect()
}

/// Fails unless `probs` has the fixture's length and every value within 1e-5 of it.
pub fn assert_matches_fixture(probs: &[f32], fixture: &[f32]) {
    assert_eq!(probs.len(), fixture.len());
    for (i, (got, want)) in probs.iter().zip(fixture).enumerate() {
        assert!((got - want).abs() < 1e-5, "probability {i}: {got} here vs {want} in the fixture");
    }
}

pub const REFERENCE_FIXTURE: &str = include_str!("../fixtures/reference_probabilities.json");

pub fn reference_fixture() -> Vec<f32> {
    serde_json::from_str(REFERENCE_FIXTURE).expect("fixture is a JSON array of numbers")
}

pub const REFERENCE_FIXTURE_INT8: &str = include_str!("../fixtures/reference_probabilities_int8.json");

pub fn reference_fixture_int8() -> Vec<f32> {
    serde_json::from_str(REFERENCE_FIXTURE_INT8).expect("fixture is a JSON array of numbers")
}

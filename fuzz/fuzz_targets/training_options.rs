//! What the wasm API takes from JS as training options (a `TrainConfig` as JSON, a
//! test-time augmentation and a precision by name): anything is either refused with an error
//! or trains a step and exports, never a panic.
#![no_main]

use std::sync::OnceLock;

use fer_cnn::data::{Dataset, Usage};
use fer_cnn::engine::Network;
use fer_cnn::inference::Tta;
use fer_cnn::models::{preset, StoredDtype};
use fer_cnn::train::{TrainConfig, TrainingRun};
use libfuzzer_sys::fuzz_target;

fn faces() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut data = Dataset::new();
        for i in 0..14u8 {
            let face: Vec<u8> = (0..48 * 48).map(|p| (p as u8).wrapping_mul(i + 1)).collect();
            data.push(&face, i % 7, if i < 10 { Usage::Training } else { Usage::PublicTest }).expect("a whole face");
        }
        data
    })
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.splitn(3, '\n');
    let (Some(config), tta, precision) = (parts.next(), parts.next().unwrap_or("none"), parts.next().unwrap_or("f32")) else { return };
    let Ok(config) = serde_json::from_str::<TrainConfig>(config) else { return };
    let Ok(tta) = serde_json::from_value::<Tta>(serde_json::Value::String(tta.to_string())) else { return };
    let Ok(dtype) = StoredDtype::from_name(precision) else { return };
    let network = Network::new(preset("seed").expect("preset"), 1).expect("builds");
    let Ok(mut run) = TrainingRun::new(network, config, faces(), Some(10), tta) else { return };
    run.train_slice(faces(), 2);
    run.end_epoch(faces());
    let _ = run.export(faces(), dtype);
});

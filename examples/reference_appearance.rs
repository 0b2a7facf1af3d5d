//! Writes the reference faces' appearance statistics that calibration ships with
//! (src/train/reference_appearance.bin): those of 1,000 FER2013 Training faces spread evenly
//! over the file, as f16, one face after another. The gate of a calibrated model learns
//! ordinary faces from them, and they measure what a calibration risks on such faces.
//!
//!     cargo run --release --example reference_appearance -- ../shared/fer2013/fer2013-train-publictest.csv.gz

use fer_cnn::data::input::face_to_input;
use fer_cnn::data::{read_fer2013_path, spread_evenly, Usage, FACE_PIXELS};
use fer_cnn::engine::personal::appearance_statistics;

const FACES: usize = 1000;
const OUT: &str = "src/train/reference_appearance.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input] = args.as_slice() else {
        return Err("usage: reference_appearance FER2013.csv[.gz]".into());
    };
    let data = read_fer2013_path(input.as_ref(), |_| {})?.dataset;
    let rows = spread_evenly(&data.indices_of(Usage::Training), FACES);
    let mut bytes = Vec::with_capacity(rows.len() * 16);
    let mut values = vec![0.0f32; FACE_PIXELS];
    for row in rows {
        face_to_input(data.face(row), &mut values);
        for statistic in appearance_statistics(&values) {
            bytes.extend_from_slice(&half::f16::from_f32(statistic).to_le_bytes());
        }
    }
    std::fs::write(OUT, &bytes)?;
    println!("wrote {OUT}: {} bytes", bytes.len());
    Ok(())
}

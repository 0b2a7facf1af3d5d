//! Measures calibration (`train::calibrate`) on FER2013 PublicTest faces seen through each of
//! the tuning shifts in tests/common/shift.rs, with no FER2013 rows in the fit: `per_class`
//! captures of each expression are calibrated on, and other faces (`fresh_per_class` of each
//! expression) are read by the starting and the calibrated model with and without the shift.
//!
//!     cargo run --release --example calibration_shifts -- ../shared/fer2013/fer2013-train-publictest.csv.gz www/models/fast.safetensors [PER_CLASS=30] [FRESH_PER_CLASS=40] [gate|nogate|both]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{shift::Shift, Lcg};
use fer_cnn::data::{read_fer2013_path, Dataset, Usage, NUM_CLASSES};
use fer_cnn::engine::Network;
use fer_cnn::inference::{evaluate, Tta};
use fer_cnn::models::load_model;
use fer_cnn::train::{Calibration, CalibrationConfig, CalibrationProgress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, model, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: calibration_shifts FER2013.csv[.gz] MODEL.safetensors [PER_CLASS=30] [FRESH_PER_CLASS=40] [gate|nogate|both]".into()
        );
    };
    let per_class: usize = rest.first().map_or(Ok(30), |n| n.parse())?;
    let fresh_per_class: usize = rest.get(1).map_or(Ok(40), |n| n.parse())?;
    let variants: Vec<bool> = match rest.get(2).map(String::as_str) {
        Some("gate") | None => vec![true],
        Some("nogate") => vec![false],
        _ => vec![false, true],
    };
    let data = read_fer2013_path(input.as_ref(), |_| {})?.dataset;
    let model_bytes = std::fs::read(model)?;
    let public_test = data.indices_of(Usage::PublicTest);
    let mut capture_rows = Vec::new();
    let mut fresh_rows = Vec::new();
    for class in 0..NUM_CLASSES as u8 {
        let rows: Vec<usize> = public_test.iter().copied().filter(|&r| data.label(r) == class).collect();
        let take = per_class.min(rows.len() / 2);
        capture_rows.extend_from_slice(&rows[..take]);
        fresh_rows.extend(rows[take..].iter().take(fresh_per_class));
    }
    println!("| shift | gate | held-out captures | fresh faces, shifted | fresh faces, unshifted | held-out captures unshifted | reference faces read personally | verdict | fit time |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // SHIFT_SEEDS=1,2,3: shifts drawn as the tests draw them instead of the tuning ones.
    let shifts: Vec<(String, Shift)> = match std::env::var("SHIFT_SEEDS") {
        Ok(seeds) => seeds
            .split(',')
            .map(|s| Ok((format!("drawn {s}"), Shift::draw(&mut Lcg(s.trim().parse()?)))))
            .collect::<Result<_, std::num::ParseIntError>>()?,
        Err(_) => Shift::tuning().into_iter().map(|(name, shift)| (name.to_string(), shift)).collect(),
    };
    for (name, shift) in shifts {
        let mut rng = Lcg(7);
        let see = |rows: &[usize], shifted: bool, rng: &mut Lcg| -> Dataset {
            let mut out = Dataset::new();
            for &row in rows {
                let face = if shifted { shift.apply(data.face(row), rng) } else { data.face(row).to_vec() };
                out.push(&face, data.label(row), Usage::Training).expect("a face");
            }
            out
        };
        let captures = see(&capture_rows, true, &mut rng);
        let fresh_shifted = see(&fresh_rows, true, &mut rng);
        let fresh_plain = see(&fresh_rows, false, &mut rng);
        let plain_captures = see(&capture_rows, false, &mut rng);
        for &gate in &variants {
            let start = load_model(&model_bytes)?.network;
            // CALIBRATION_CONFIG: options as JSON over the defaults, for trying others.
            let base = match std::env::var("CALIBRATION_CONFIG") {
                Ok(json) => serde_json::from_str(&json)?,
                Err(_) => CalibrationConfig::default(),
            };
            let config = CalibrationConfig { gate, ..base };
            let started = Instant::now();
            let mut calibration = Calibration::new(start, &captures, None, config.clone())?;
            while calibration.advance() != CalibrationProgress::Finished {}
            let seconds = started.elapsed().as_secs_f32();
            let report = calibration.report().expect("finished").clone();
            let mut calibrated = calibration.calibrated_network().expect("finished").copy_without_personal();
            calibrated.set_personal(
                calibration
                    .calibrated_network()
                    .and_then(|n| n.personal())
                    .map(|p| fer_cnn::engine::personal::Personal { gate: p.gate.clone(), network: p.network.copy_without_personal() }),
            );
            let mut start = load_model(&model_bytes)?.network;
            let accuracy = |network: &mut Network, set: &Dataset, rows: &[usize]| evaluate(network, set, rows, Tta::None).accuracy * 100.0;
            let all = |set: &Dataset| (0..set.len()).collect::<Vec<_>>();
            let pair = |start: &mut Network, calibrated: &mut Network, set: &Dataset, rows: &[usize]| {
                let (b, a) = (accuracy(start, set, rows), accuracy(calibrated, set, rows));
                format!("{b:.1} → {a:.1} ({:+.1})", a - b)
            };
            let held_out_rows = fer_cnn::train::split_captures(captures.labels(), config.held_out_share).1;
            let held = report.held_out_accuracy.as_ref().map_or("-".into(), |s| {
                format!(
                    "{:.1} → {:.1} ({:+.1})",
                    s.before.accuracy * 100.0,
                    s.after.accuracy * 100.0,
                    (s.after.accuracy - s.before.accuracy) * 100.0
                )
            });
            println!(
                "| {name} | {} | {held} | {} | {} | {} | {:.1}% | {} | {seconds:.1} s |",
                if gate { "yes" } else { "no" },
                pair(&mut start, &mut calibrated, &fresh_shifted, &all(&fresh_shifted)),
                pair(&mut start, &mut calibrated, &fresh_plain, &all(&fresh_plain)),
                pair(&mut start, &mut calibrated, &plain_captures, &held_out_rows),
                report.reference_faces.read_personally * 100.0,
                if report.verdict.accepted { "kept" } else { "refused" },
            );
            eprintln!("  {name}: {}", report.verdict.reason);
        }
    }
    Ok(())
}

//! The curves behind `face::quality`'s thresholds: the shipped models' accuracy on FER2013
//! PublicTest, in integer arithmetic as the camera runs them, as faces are shrunk (a face of
//! fewer source pixels, enlarged to 48x48 by the camera's crop), darkened, washed out towards
//! white and flattened towards their mean grey; with the crop statistics (`brightness`,
//! `contrast`) of each changed set, and where each model has fallen the chosen number of
//! points. Prints the tables of docs/quality.md:
//!
//!     cargo run --release --example face_quality -- ../shared/fer2013/fer2013-train-publictest.csv.gz [FAMILIES] [STRIDE]
//!
//! FAMILIES: a comma-separated choice of size, dark, bright, contrast, and unchanged (how many
//! of the faces as they are each flag marks, and the models' accuracy on them; default: all); STRIDE:
//! every how many PublicTest rows are used (default 1, all 3,589).

use std::path::Path;

use fer_cnn::data::{read_fer2013_path, Usage, FACE_PIXELS, FACE_SIDE};
use fer_cnn::engine::Network;
use fer_cnn::face::quality::{assess_face, brightness_and_contrast, ACCURACY_DROP_POINTS};
use fer_cnn::face::{crop_face, AreaResampler, Frame, Rect};
use fer_cnn::inference::{argmax, predict_faces, Tta};
use fer_cnn::models::load_model;

const MODELS: [&str; 2] = ["fast", "default"];

/// One way of changing faces, at levels from none to severe.
struct Family {
    /// How the command line names it.
    key: &'static str,
    name: &'static str,
    /// What a level means, for the table's header.
    level_name: &'static str,
    levels: &'static [f32],
    /// The crop statistic its threshold is stated in: brightness (false) or contrast (true);
    /// `None` for the size, stated in source pixels (the level itself).
    statistic: Option<Statistic>,
    change: fn(&[u8], f32, &mut AreaResampler) -> Vec<u8>,
}

#[derive(Clone, Copy, PartialEq)]
enum Statistic {
    Brightness,
    Contrast,
}

/// A `side`-pixel face seen by the camera: FER2013's 48x48 face area-averaged to `side` pixels
/// (a camera's pixels), rounded to bytes, then cropped back to 48x48 by the camera's own crop.
fn shrink(face: &[u8], side: f32, resampler: &mut AreaResampler) -> Vec<u8> {
    let side = side as usize;
    let rgba = |grey: &[u8]| grey.iter().flat_map(|&g| [g, g, g, 255]).collect::<Vec<u8>>();
    let full = rgba(face);
    let mut small_rgb = vec![0.0f32; side * side * 3];
    let whole = Rect::new(0.0, 0.0, FACE_SIDE as f32, FACE_SIDE as f32);
    resampler.resample_rgb(&Frame::new(&full, FACE_SIDE, FACE_SIDE).unwrap(), whole, side, side, &mut small_rgb).unwrap();
    let small: Vec<u8> = small_rgb.chunks_exact(3).map(|p| p[0].round().clamp(0.0, 255.0) as u8).collect();
    let small_rgba = rgba(&small);
    let mut crop = [0u8; FACE_PIXELS];
    let square = Rect::new(0.0, 0.0, side as f32, side as f32);
    crop_face(&Frame::new(&small_rgba, side, side).unwrap(), square, resampler, &mut crop).unwrap();
    crop.to_vec()
}

fn darken(face: &[u8], k: f32, _: &mut AreaResampler) -> Vec<u8> {
    face.iter().map(|&p| (p as f32 * k).round() as u8).collect()
}

/// Washed out: each pixel moved a fraction `a` of the way to white.
fn brighten(face: &[u8], a: f32, _: &mut AreaResampler) -> Vec<u8> {
    face.iter().map(|&p| (p as f32 + a * (255.0 - p as f32)).round() as u8).collect()
}

/// Flattened: each pixel's distance from the face's mean grey scaled by `c`.
fn flatten(face: &[u8], c: f32, _: &mut AreaResampler) -> Vec<u8> {
    let mean = face.iter().map(|&p| p as f32).sum::<f32>() / face.len() as f32;
    face.iter().map(|&p| (mean + c * (p as f32 - mean)).round().clamp(0.0, 255.0) as u8).collect()
}

const FAMILIES: [Family; 4] = [
    Family {
        key: "size",
        name: "smaller faces",
        level_name: "side (px)",
        levels: &[48.0, 40.0, 32.0, 28.0, 24.0, 20.0, 16.0, 12.0, 8.0],
        statistic: None,
        change: shrink,
    },
    Family {
        key: "dark",
        name: "darker faces (grey x k)",
        level_name: "k",
        levels: &[1.0, 0.5, 0.3, 0.2, 0.12, 0.07],
        statistic: Some(Statistic::Brightness),
        change: darken,
    },
    Family {
        key: "bright",
        name: "washed-out faces (grey + a (255 - grey))",
        level_name: "a",
        levels: &[0.0, 0.4, 0.6, 0.75, 0.85, 0.92],
        statistic: Some(Statistic::Brightness),
        change: brighten,
    },
    Family {
        key: "contrast",
        name: "flatter faces (mean + c (grey - mean))",
        level_name: "c",
        levels: &[1.0, 0.5, 0.3, 0.2, 0.12, 0.07],
        statistic: Some(Statistic::Contrast),
        change: flatten,
    },
];

fn accuracy(network: &mut Network, faces: &[u8], labels: &[u8]) -> f32 {
    let probs = predict_faces(network, faces, Tta::None);
    let correct = probs.rows().into_iter().zip(labels).filter(|(p, &label)| argmax(*p) == label as usize).count();
    100.0 * correct as f32 / labels.len() as f32
}

fn median(mut values: Vec<f32>) -> f32 {
    values.sort_by(f32::total_cmp);
    values[values.len() / 2]
}

/// Where along `xs` (in order of levels) `ys` first falls to `target`, interpolated linearly
/// between the two levels around it; `None` if it never does.
fn crossing(xs: &[f32], ys: &[f32], target: f32) -> Option<f32> {
    let i = ys.iter().position(|&y| y <= target)?;
    if i == 0 {
        return Some(xs[0]);
    }
    let t = (ys[i - 1] - target) / (ys[i - 1] - ys[i]);
    Some(xs[i - 1] + t * (xs[i] - xs[i - 1]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, csv, rest @ ..] = args.as_slice() else {
        return Err("usage: face_quality FER2013.csv[.gz] [FAMILIES] [STRIDE]".into());
    };
    let chosen: Vec<&str> =
        rest.first().map_or(FAMILIES.iter().map(|f| f.key).chain(["unchanged"]).collect(), |list| list.split(',').collect());
    let stride: usize = rest.get(1).map_or(Ok(1), |n| n.parse())?;
    let data = read_fer2013_path(csv.as_ref(), |_| {})?.dataset;
    let rows: Vec<usize> = data.indices_of(Usage::PublicTest).into_iter().step_by(stride.max(1)).collect();
    let labels: Vec<u8> = rows.iter().map(|&r| data.label(r)).collect();
    let mut networks: Vec<Network> = MODELS
        .iter()
        .map(|name| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("www/models/{name}.safetensors"));
            let mut network = load_model(&std::fs::read(&path)?)?.network;
            network.set_int8_inference(true);
            Ok(network)
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    println!(
        "FER2013 PublicTest, {} faces (every {stride} row); models www/models/{{{}}}.safetensors in integer arithmetic, no TTA",
        rows.len(),
        MODELS.join(",")
    );
    println!("brightness = mean grey of the 48x48 crop, contrast = its standard deviation (0-1); medians over the faces");
    let mut resampler = AreaResampler::default();
    for family in FAMILIES.iter().filter(|f| chosen.contains(&f.key)) {
        println!("\n{}", family.name);
        println!(
            "| {} | median brightness | median contrast | {} |",
            family.level_name,
            MODELS.map(|m| format!("{m} accuracy")).join(" | ")
        );
        println!("|---:|---:|---:|{}", "---:|".repeat(MODELS.len()));
        let (mut statistics, mut accuracies) = (Vec::new(), vec![Vec::new(); MODELS.len()]);
        for &level in family.levels {
            let faces: Vec<u8> = rows.iter().flat_map(|&r| (family.change)(data.face(r), level, &mut resampler)).collect();
            let measured: Vec<(f32, f32)> = faces.chunks_exact(FACE_PIXELS).map(brightness_and_contrast).collect();
            let brightness = median(measured.iter().map(|m| m.0).collect());
            let contrast = median(measured.iter().map(|m| m.1).collect());
            statistics.push(match family.statistic {
                Some(Statistic::Brightness) => brightness,
                Some(Statistic::Contrast) => contrast,
                None => level,
            });
            let mut line = format!("| {level} | {brightness:.3} | {contrast:.3} |");
            for (network, accuracy_at) in networks.iter_mut().zip(&mut accuracies) {
                let a = accuracy(network, &faces, &labels);
                accuracy_at.push(a);
                line += &format!(" {a:.2}% |");
            }
            println!("{line}");
        }
        for (model, accuracy_at) in MODELS.iter().zip(&accuracies) {
            let target = accuracy_at[0] - ACCURACY_DROP_POINTS;
            let at = crossing(&statistics, accuracy_at, target);
            let what = match family.statistic {
                None => "side (source px)",
                Some(Statistic::Brightness) => "median crop brightness",
                Some(Statistic::Contrast) => "median crop contrast",
            };
            match at {
                Some(at) => println!("{model}: {ACCURACY_DROP_POINTS} points down ({target:.2}%) at {what} {at:.3}"),
                None => println!("{model}: never {ACCURACY_DROP_POINTS} points down over these levels"),
            }
        }
    }
    if chosen.contains(&"unchanged") {
        unchanged_faces_by_flag(&mut networks, &data, &rows, &labels);
    }
    Ok(())
}

/// The faces as they are (as if each were 48 source pixels): how many each flag marks, and the
/// models' accuracy on those and on the rest.
fn unchanged_faces_by_flag(networks: &mut [Network], data: &fer_cnn::data::Dataset, rows: &[usize], labels: &[u8]) {
    let faces: Vec<u8> = rows.iter().flat_map(|&r| data.face(r).iter().copied()).collect();
    let correct: Vec<Vec<bool>> = networks
        .iter_mut()
        .map(|network| {
            let probs = predict_faces(network, &faces, Tta::None);
            probs.rows().into_iter().zip(labels).map(|(p, &label)| argmax(p) == label as usize).collect()
        })
        .collect();
    let qualities: Vec<_> = faces.chunks_exact(FACE_PIXELS).map(|f| assess_face(f.try_into().unwrap(), FACE_SIDE as f32)).collect();
    println!("\nthe faces as they are, by flag");
    println!("| flag | faces | {} |", MODELS.map(|m| format!("{m} accuracy: flagged / not")).join(" | "));
    println!("|---|---:|{}", "---:|".repeat(MODELS.len()));
    type Flag = fn(&fer_cnn::face::FaceQuality) -> bool;
    let flags: [(&str, Flag); 4] =
        [("dark", |q| q.dark), ("bright", |q| q.bright), ("low-contrast", |q| q.low_contrast), ("any", |q| q.is_doubtful())];
    for (name, flagged) in flags {
        let marked: Vec<bool> = qualities.iter().map(flagged).collect();
        let count = marked.iter().filter(|&&m| m).count();
        let mut line = format!("| {name} | {count} ({:.1}%) |", 100.0 * count as f32 / rows.len() as f32);
        for model_correct in &correct {
            let rate = |want: bool| {
                let (n, right) = model_correct
                    .iter()
                    .zip(&marked)
                    .filter(|(_, &m)| m == want)
                    .fold((0, 0), |(n, right), (&c, _)| (n + 1, right + c as usize));
                100.0 * right as f32 / n.max(1) as f32
            };
            line += &format!(" {:.1}% / {:.1}% |", rate(true), rate(false));
        }
        println!("{line}");
    }
}

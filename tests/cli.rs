//! The `fer` command line as a user runs it: train, resume, evaluate, merge and describe a model
//! on a small synthetic CSV, and the messages it gives for mistakes.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory for one test's files (removed when the test passes; kept to look at when it fails).
fn workdir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fer-cli-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

fn fer(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fer")).args(args).current_dir(dir).output().expect("fer runs")
}

fn succeeds(dir: &Path, args: &[&str]) -> (String, String) {
    let output = fer(dir, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    assert!(output.status.success(), "fer {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Runs a command that must fail; returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let output = fer(dir, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "fer {args:?} should have failed:\n{stderr}");
    stderr
}

fn write_csv(dir: &Path, per_class: usize, usages: &[&str]) -> String {
    std::fs::write(dir.join("faces.csv"), common::synthetic_csv(per_class, usages, 7)).expect("CSV written");
    "faces.csv".to_string()
}

const TRAIN_SEED: &[&str] = &["train", "--csv", "faces.csv", "--preset", "seed", "--batch", "14", "--lr", "0.01"];

fn eval_json(dir: &Path, model: &str) -> serde_json::Value {
    eval_json_with(dir, model, &[])
}

fn eval_json_with(dir: &Path, model: &str, options: &[&str]) -> serde_json::Value {
    let (stdout, _) =
        succeeds(dir, &[&["eval", "--model", model, "--csv", "faces.csv", "--usage", "PublicTest", "--json"], options].concat());
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("--json prints one JSON object ({e}):\n{stdout}"))
}

#[test]
fn train_resume_evaluate_merge_and_describe() {
    let dir = workdir("flow");
    write_csv(&dir, 6, &["Training", "PublicTest"]);

    let (stdout, _) = succeeds(&dir, &[TRAIN_SEED, &["--epochs", "2", "--seed", "1", "--out", "a.safetensors"]].concat());
    assert!(stdout.contains("epoch 1:") && stdout.contains("epoch 2:"), "{stdout}");
    assert!(stdout.contains("final: PublicTest accuracy"), "{stdout}");
    assert!(dir.join("a.safetensors").exists() && dir.join("a.ckpt").exists());

    // A longer run with --resume continues after the checkpoint's epoch instead of starting over.
    let (stdout, stderr) = succeeds(&dir, &[TRAIN_SEED, &["--epochs", "3", "--seed", "1", "--resume", "--out", "a.safetensors"]].concat());
    assert!(stderr.contains("after epoch 2"), "{stderr}");
    assert!(stdout.contains("epoch 3:") && !stdout.contains("epoch 1:"), "{stdout}");

    succeeds(&dir, &[TRAIN_SEED, &["--epochs", "1", "--seed", "2", "--out", "b.safetensors"]].concat());

    let report = eval_json(&dir, "a.safetensors");
    let n = report["n"].as_u64().expect("n");
    assert_eq!(n, 6 * 7, "every PublicTest face is evaluated");
    let confusion: Vec<Vec<u64>> = serde_json::from_value(report["confusion"].clone()).expect("a 7x7 confusion matrix");
    assert_eq!(confusion.len(), 7);
    assert_eq!(confusion.iter().flatten().sum::<u64>(), n);
    let correct: u64 = (0..7).map(|k| confusion[k][k]).sum();
    let accuracy = report["accuracy"].as_f64().expect("accuracy");
    assert!((accuracy - correct as f64 / n as f64).abs() < 1e-6, "accuracy {accuracy} is the diagonal's share");

    let (_, stderr) =
        succeeds(&dir, &["merge", "--model", "a.safetensors", "--model", "b.safetensors", "--half", "--out", "m.safetensors"]);
    assert!(stderr.contains("'seed-x2'"), "{stderr}");
    assert_eq!(eval_json(&dir, "m.safetensors")["n"].as_u64(), Some(n));

    // The weight average of two seed models is one seed model, and says where it came from.
    let (_, stderr) = succeeds(&dir, &["average", "--model", "a.safetensors", "--model", "b.safetensors", "--out", "avg.safetensors"]);
    assert!(stderr.contains("the mean of 2 'seed' models"), "{stderr}");
    let (stdout, _) = succeeds(&dir, &["info", "avg.safetensors"]);
    assert!(stdout.starts_with("seed:") && stdout.contains("averaged_from: a.safetensors, b.safetensors"), "{stdout}");
    assert_eq!(eval_json(&dir, "avg.safetensors")["n"].as_u64(), Some(n));
    let stderr = fails(&dir, &["average", "--model", "a.safetensors", "--model", "m.safetensors", "--out", "x.safetensors"]);
    assert!(stderr.contains("only models of one architecture can be averaged"), "{stderr}");

    let (stdout, _) = succeeds(&dir, &["info", "m.safetensors"]);
    assert!(stdout.starts_with("seed-x2:"), "{stdout}");
    assert!(stdout.contains("merged_from: a.safetensors, b.safetensors"), "{stdout}");
    let parameters = stdout.lines().find_map(|l| l.strip_prefix("parameters: ")).expect("info prints the parameters");

    // Integer inference evaluates the same faces, to nearly the same accuracy.
    let (exact, integer) = (eval_json(&dir, "m.safetensors"), eval_json_with(&dir, "m.safetensors", &["--int8-inference"]));
    assert_eq!(integer["n"], exact["n"]);
    let accuracy = |json: &serde_json::Value| json["accuracy"].as_f64().expect("an accuracy");
    assert!((accuracy(&integer) - accuracy(&exact)).abs() <= 0.1, "{integer} vs {exact}");

    // bench times a model file as it times a preset: its row names it and counts its parameters,
    // and gives its training speed and classify times in f32 and in integer arithmetic.
    let (stdout, _) = succeeds(&dir, &["bench", "--seconds", "0.05", "m.safetensors", "seed"]);
    let row: Vec<&str> = stdout.lines().find(|l| l.starts_with("m.safetensors")).expect("a row for the file").split_whitespace().collect();
    assert_eq!(row.len(), 6, "{stdout}");
    assert_eq!(row[1], parameters, "{stdout}");
    assert!(row[3..].iter().all(|figure| figure.parse::<f64>().is_ok_and(|v| v > 0.0)), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("seed ")), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mistakes_are_explained_and_exit_non_zero() {
    let dir = workdir("mistakes");
    write_csv(&dir, 2, &["Training"]);
    succeeds(&dir, &[TRAIN_SEED, &["--epochs", "1", "--out", "a.safetensors"]].concat());

    let stderr = fails(&dir, &["eval", "--model", "a.safetensors", "--csv", "missing.csv"]);
    assert!(stderr.contains("error: ") && stderr.contains("missing.csv"), "{stderr}");

    let stderr = fails(&dir, &["eval", "--model", "a.safetensors", "--csv", "faces.csv", "--usage", "PublicTest"]);
    assert!(stderr.contains("no rows to evaluate with Usage PublicTest"), "{stderr}");

    let stderr = fails(&dir, &["eval", "--model", "faces.csv", "--csv", "faces.csv"]);
    assert!(stderr.contains("error: "), "a CSV is not a model: {stderr}");

    let stderr = fails(&dir, &["merge", "--model", "a.safetensors", "--out", "m.safetensors"]);
    assert!(stderr.contains("two or more models"), "{stderr}");

    let stderr = fails(&dir, &["recalibrate", "--model", "a.safetensors", "--csv", "faces.csv", "--out", "r.safetensors"]);
    assert!(stderr.contains("no batch-norm layers"), "{stderr}");

    let stderr = fails(&dir, &["info", "no-such-preset"]);
    assert!(stderr.contains("neither a model file nor a preset") && stderr.contains("seed, mlp, deep"), "{stderr}");
    let stderr = fails(&dir, &["bench", "--seconds", "0.05", "no-such-model.safetensors"]);
    assert!(stderr.contains("neither a model file nor a preset"), "{stderr}");

    let stderr = fails(&dir, &["train", "--csv", "faces.csv", "--half", "--int8", "--out", "x.safetensors"]);
    assert!(stderr.contains("--int8") && stderr.contains("--half"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_model_files_are_refused_with_a_message_and_a_non_zero_exit() {
    let dir = workdir("hostile");
    for (i, (what, bytes, expected)) in common::hostile::hostile_files().into_iter().enumerate() {
        let name = format!("hostile-{i}.safetensors");
        std::fs::write(dir.join(&name), bytes).expect("file written");
        for command in [&["info", name.as_str()][..], &["eval", "--model", name.as_str(), "--csv", "absent.csv"][..]] {
            let stderr = fails(&dir, command);
            assert!(stderr.starts_with("error: model: ") && stderr.contains(expected), "{what}, fer {command:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_diverging_run_exits_non_zero_and_says_what_to_try() {
    let dir = workdir("diverge");
    let csv = write_csv(&dir, 4, &["Training"]);
    let stderr = fails(
        &dir,
        &["train", "--csv", &csv, "--epochs", "2", "--batch", "7", "--optimizer", "sgd", "--lr", "1e10", "--out", "m.safetensors"],
    );
    assert!(stderr.contains("error: training: training diverged at step") && stderr.contains("ten times lower"), "{stderr}");
    assert!(!dir.join("m.safetensors").exists(), "no epoch finished: nothing worth saving");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn calibrate_fits_a_persons_captures_and_eval_reads_the_result() {
    let dir = workdir("calibrate");
    let mut rng = common::Lcg(5);
    let mut csv = String::from("emotion,pixels,Usage\n");
    for label in 0..7u8 {
        for _ in 0..8 {
            let face = common::shift::shifted_face(&common::synthetic_face(label, &mut rng), &mut rng);
            let pixels: Vec<String> = face.iter().map(|p| p.to_string()).collect();
            // Whatever the Usage says, every row is a capture.
            csv += &format!("{label},{},PublicTest\n", pixels.join(" "));
        }
    }
    std::fs::write(dir.join("me.csv"), csv).expect("CSV written");
    let (stdout, stderr) = succeeds(&dir, &["calibrate", "--csv", "me.csv", "--epochs", "10", "--out", "me.safetensors"]);
    assert!(stderr.contains("42 captures fitted") && stderr.contains("14 held out"), "{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("held-out captures (14): ")).unwrap_or_else(|| panic!("{stdout}"));
    let percents: Vec<f32> = line.split_whitespace().filter_map(|w| w.strip_suffix('%')?.parse().ok()).collect();
    assert!(percents.len() == 2 && percents[1] > percents[0], "{line}");
    assert!(stdout.contains("reference faces (500 ordinary faces shipped with fer)"), "{stdout}");
    let (stdout, _) = succeeds(&dir, &["eval", "--model", "me.safetensors", "--csv", "me.csv", "--json"]);
    let after: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(after["accuracy"].as_f64().unwrap() > 0.5, "the calibrated model reads the captures: {after}");

    let (stdout, _) = succeeds(&dir, &["info", "me.safetensors"]);
    assert!(stdout.contains("calibrated to one person"), "{stdout}");

    let stderr = fails(&dir, &["calibrate", "--csv", "me.csv", "--model", "absent.safetensors", "--out", "x.safetensors"]);
    assert!(stderr.contains("absent.safetensors"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn temperature_is_fitted_on_publictest_and_stored_beside_unchanged_weights() {
    let dir = workdir("temperature");
    write_csv(&dir, 6, &["Training", "PublicTest"]);
    succeeds(&dir, &[TRAIN_SEED, &["--epochs", "2", "--seed", "1", "--int8", "--out", "a.safetensors"]].concat());
    let (stdout, _) =
        succeeds(&dir, &["temperature", "--model", "a.safetensors", "--csv", "faces.csv", "--int8-inference", "--out", "t.safetensors"]);
    assert!(stdout.contains("42 PublicTest faces, integer arithmetic"), "{stdout}");
    let temperature: f32 = stdout.lines().find_map(|l| l.strip_prefix("temperature ")?.parse().ok()).unwrap_or_else(|| panic!("{stdout}"));
    let (info, _) = succeeds(&dir, &["info", "t.safetensors"]);
    let stored: f32 = info.lines().find_map(|l| l.strip_prefix("temperature: ")?.parse().ok()).unwrap_or_else(|| panic!("{info}"));
    assert_eq!(stored, temperature);

    // The weights are the same bytes, so every face gets the same class.
    let (a, t) = (std::fs::read(dir.join("a.safetensors")).unwrap(), std::fs::read(dir.join("t.safetensors")).unwrap());
    let (a, t) = (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&t).unwrap());
    for (name, view) in a.tensors() {
        assert_eq!(view.data(), t.tensor(&name).unwrap().data(), "{name}");
    }
    let options = ["--int8-inference"];
    let (before, after) = (eval_json_with(&dir, "a.safetensors", &options), eval_json_with(&dir, "t.safetensors", &options));
    assert_eq!(before["confusion"], after["confusion"]);
    let (stdout, _) = succeeds(&dir, &["eval", "--model", "t.safetensors", "--csv", "faces.csv", "--usage", "PublicTest"]);
    assert!(stdout.contains(&format!("(temperature {stored})")), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn calibrate_keeps_the_current_model_when_calibrating_does_not_help() {
    let dir = workdir("calibrate-no-help");
    let mut rng = common::Lcg(8);
    let mut csv = String::from("emotion,pixels,Usage\n");
    // Labels that say nothing about the faces: no fit can read held-out captures better.
    for label in 0..7u8 {
        for _ in 0..8 {
            let face = common::shift::shifted_face(&common::synthetic_face((rng.next() % 7) as u8, &mut rng), &mut rng);
            let pixels: Vec<String> = face.iter().map(|p| p.to_string()).collect();
            csv += &format!("{label},{},Training\n", pixels.join(" "));
        }
    }
    std::fs::write(dir.join("noise.csv"), csv).expect("CSV written");
    let stderr = fails(&dir, &["calibrate", "--csv", "noise.csv", "--epochs", "10", "--out", "noise.safetensors"]);
    assert!(stderr.contains("error: calibration: ") && stderr.contains("the current model is kept"), "{stderr}");
    assert!(stderr.contains("nothing written to noise.safetensors"), "{stderr}");
    assert!(!dir.join("noise.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}

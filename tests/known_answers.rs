//! The engine against PyTorch's known answers (tests/fixtures/known_answers/, made by
//! reference/torch/known_answers.py): logits, the label-smoothed loss, every gradient, three
//! steps of SGD with Nesterov momentum, Adam and AdamW, and batch-norm's running statistics, for
//! `seed` and a small batch-norm net. The tolerances are `known_answers::TOLERANCES`; the browser
//! test (tests/web.rs) checks the same fixtures. Model files that PyTorch wrote load here as our
//! own. `cargo test --release --test known_answers -- --nocapture` prints the errors found.

#![cfg(not(target_arch = "wasm32"))]

#[path = "common/known_answers.rs"]
mod known_answers;

use fer_cnn::models::{as_stored, load_model, preset, StoredDtype};

#[test]
fn seed_reproduces_pytorchs_known_answers() {
    let errors = known_answers::assert_known_answers("seed", known_answers::SEED);
    eprintln!("seed: {errors:#?}");
}

#[test]
fn a_batch_norm_net_reproduces_pytorchs_known_answers() {
    let errors = known_answers::assert_known_answers("batch_norm", known_answers::BATCH_NORM);
    eprintln!("batch_norm: {errors:#?}");
}

#[test]
fn the_pytorch_reference_builds_the_same_presets() {
    let torch_presets = known_answers::torch_presets();
    assert_eq!(torch_presets.len(), fer_cnn::models::PRESETS.len());
    for (name, spec) in torch_presets {
        assert_eq!(spec, preset(&name).unwrap(), "reference/torch/fer_torch.py's '{name}' differs from src/models/presets.rs");
    }
}

#[test]
fn model_files_written_by_pytorch_load_as_our_own() {
    for (fixture, fixture_bytes, optimizer, file) in known_answers::TORCH_MODEL_FILES {
        let mut loaded = load_model(file).unwrap_or_else(|e| panic!("{fixture} after {optimizer}: {e}"));
        let ours = known_answers::network_after(fixture_bytes, optimizer);
        assert_eq!(loaded.stored == StoredDtype::Int8, optimizer == "sgd", "{fixture} after {optimizer}: {:?}", loaded.stored);
        if loaded.stored == StoredDtype::Int8 {
            // The same 8-bit integers and scales as `fer` writes for these weights.
            let expected = as_stored(&ours, StoredDtype::Int8).unwrap();
            for ((name, got), (_, want)) in loaded.network.named_tensors().into_iter().zip(expected.named_tensors()) {
                assert_eq!(got, want, "{fixture} after {optimizer}, int8: {name}");
            }
        } else {
            let error = known_answers::eval_logits_error(fixture_bytes, &mut loaded.network, optimizer);
            assert!(error <= known_answers::TOLERANCES.logits, "{fixture} after {optimizer}: logits off by {error:.2e}");
        }
    }
}

//! The fixed scenario of `common::reference_probabilities` natively, against the fixture that
//! the browser test (tests/web.rs) checks too: native and wasm agree within 1e-5.
//! After a deliberate change to the numerics, regenerate with `UPDATE_FIXTURES=1 cargo test --test reference`.

#![cfg(not(target_arch = "wasm32"))]

mod common;

#[test]
fn native_predictions_match_the_shared_fixture() {
    let probs = common::reference_probabilities();
    assert_eq!(probs.len(), 21);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reference_probabilities.json");
        std::fs::write(path, serde_json::to_string_pretty(&probs).unwrap()).unwrap();
        return;
    }
    common::assert_matches_fixture(&probs, &common::reference_fixture());
    // The 6 training steps moved the model: not the uniform 1/7 of an untrained net.
    assert!(probs.iter().any(|p| (p - 1.0 / 7.0).abs() > 0.01));
}

#[test]
fn native_integer_predictions_match_their_shared_fixture() {
    let probs = common::reference_probabilities_int8();
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reference_probabilities_int8.json");
        std::fs::write(path, serde_json::to_string_pretty(&probs).unwrap()).unwrap();
        return;
    }
    common::assert_matches_fixture(&probs, &common::reference_fixture_int8());
    // Integer arithmetic rounds the weights to 8 bits: close to the f32 probabilities, not equal.
    let f32_probs = common::reference_probabilities();
    let difference = probs.iter().zip(&f32_probs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(difference > 0.0 && difference < 0.01, "int8 and f32 probabilities differ by {difference}");
}

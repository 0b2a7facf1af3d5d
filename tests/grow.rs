//! Growing a trained model into a deeper preset: the grown network computes what the smaller one
//! did, and architectures that cannot be grown into each other are refused.

#![cfg(not(target_arch = "wasm32"))]

use fer_cnn::engine::layers::LayerSpec;
use fer_cnn::engine::{Network, Padding, Tensor};
use fer_cnn::models::{deepen, preset};
use ndarray::IxDyn;

fn faces(n: usize, salt: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(&[n, 1, 48, 48]), |idx| ((idx[0] * 31 + idx[2] * 7 + idx[3] * 3 + salt) % 255) as f32 / 64.0 - 2.0)
}

/// A `deep` network whose batch-norm layers hold measured (not initial) statistics and
/// non-trivial scales and shifts, as a trained model's do.
fn trained_like_deep() -> Network {
    let mut network = Network::new(preset("deep").unwrap(), 3).unwrap();
    for (name, tensor) in network.named_tensors_mut() {
        if name.ends_with("gamma") {
            tensor.mapv_inplace(|_| 0.7);
        } else if name.ends_with("beta") {
            tensor.indexed_iter_mut().for_each(|(i, v)| *v = 0.05 * (i[0] % 5) as f32 - 0.1);
        }
    }
    network.recalibrate_batch_norm([faces(24, 0)]);
    network
}

#[test]
fn the_grown_network_computes_what_the_smaller_one_did() {
    let mut small = trained_like_deep();
    let mut grown = deepen(&small, preset("deeper").unwrap(), 5, |network| network.recalibrate_batch_norm([faces(24, 0)])).unwrap();
    assert_eq!(grown.spec().name, "deeper");
    assert!(grown.parameter_count() > small.parameter_count() * 2);
    // Faces the statistics were not measured on.
    let (before, after) = (small.predict(faces(4, 11)), grown.predict(faces(4, 11)));
    let largest = before.iter().zip(after.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(largest < 1e-5, "growing changed a probability by {largest}");
    // And it is no frozen copy: the inserted layers have their own weights to train.
    assert!(grown.tensor("layers.20.weight").is_some_and(|w| w.shape() == [128, 128, 3, 3]));
}

#[test]
fn architectures_that_cannot_be_grown_are_refused_with_the_reason() {
    let small = trained_like_deep();
    let error = |spec| match deepen(&small, spec, 1, |_| {}) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(error(preset("seed").unwrap()).contains("cannot grow 'deep' into 'seed'"));

    // A conv that changes the channel count cannot start as the identity.
    let mut narrowing = preset("deeper").unwrap();
    narrowing.layers[20] = LayerSpec::Conv2d { filters: 64, kernel: 3, stride: 1, padding: Padding::Same, groups: 1 };
    let message = error(narrowing);
    assert!(message.contains("64 filters on 128 channels"), "{message}");

    let deeper = deepen(&small, preset("deeper").unwrap(), 1, |_| {}).unwrap();
    let shrink = deepen(&deeper, preset("deep").unwrap(), 1, |_| {});
    assert!(shrink.is_err(), "a model cannot be grown into a smaller one");
}

//! Averaging models' weights: every tensor is the members' mean, a model averaged with itself
//! is unchanged, and models of different architectures are refused.

use fer_cnn::engine::{Mode, Network, Tensor};
use fer_cnn::models::{average, preset};
use ndarray::IxDyn;

fn faces(n: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(&[n, 1, 48, 48]), |idx| ((idx[0] * 31 + idx[2] * 7 + idx[3] * 3) % 255) as f32 / 64.0 - 2.0)
}

/// `deep` from `seed`, with batch-norm statistics measured so they differ between seeds.
fn deep(seed: u64) -> Network {
    let mut network = Network::new(preset("deep").unwrap(), seed).unwrap();
    network.recalibrate_batch_norm([faces(4)]);
    network
}

#[test]
fn every_tensor_is_the_mean_of_the_models() {
    let models = [deep(1), deep(2), deep(3)];
    let averaged = average(&models).unwrap();
    assert_eq!(averaged.spec(), models[0].spec());
    let named = averaged.named_tensors();
    assert!(named.iter().any(|(name, _)| name.ends_with("running_var")), "batch-norm statistics are averaged too");
    for (name, tensor) in named {
        let expected = models.iter().map(|m| m.tensor(&name).unwrap()).fold(Tensor::zeros(tensor.raw_dim()), |sum, t| sum + t) / 3.0;
        let largest = (tensor - &expected).iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(largest < 1e-6, "{name}: off by {largest}");
        // Different seeds really differ, so the mean is not any one of them.
        if name.ends_with("weight") {
            assert!(models.iter().all(|m| m.tensor(&name).unwrap() != tensor), "{name} is one model's, not the mean");
        }
    }
}

#[test]
fn a_model_averaged_with_itself_classifies_as_before() {
    let mut model = deep(7);
    let mut averaged = average(&[deep(7), deep(7)]).unwrap();
    let (before, after) = (model.forward(faces(3), &mut Mode::Eval), averaged.forward(faces(3), &mut Mode::Eval));
    let largest = (&before - &after).iter().fold(0.0f32, |m, d| m.max(d.abs()));
    assert!(largest < 1e-5, "logits moved by {largest}");
}

#[test]
fn models_of_different_architectures_are_refused() {
    let seed = Network::new(preset("seed").unwrap(), 1).unwrap();
    let error = average(&[deep(1), seed]).err().expect("refused").to_string();
    assert!(error.contains("one architecture") && error.contains("'deep'") && error.contains("'seed'"), "{error}");
    assert!(average(&[]).is_err(), "nothing to average");
}

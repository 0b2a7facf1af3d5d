//! The weight average of several models of one architecture: one model of the same size whose
//! every tensor is the mean of theirs ("model soups", Wortsman et al., 2022; stochastic weight
//! averaging, Izmailov et al., 2018, averages the checkpoints of one run the same way).
//!
//! Unlike [`merge`](super::merge), which averages the models' outputs and costs what running
//! them all does, this costs one model, but it only works for models in one basin of the loss:
//! one fine-tuned from another, or snapshots of one run. The average of models trained apart
//! from different random weights is not a useful network. The averaged weights move every
//! layer's activations, so batch-norm statistics are re-measured afterwards (`fer recalibrate`).

use crate::engine::Network;
use crate::{FerError, Result};

/// A network with `models`' architecture whose tensors (weights, biases, batch-norm scales,
/// shifts and running statistics) are the element-wise mean of theirs.
pub fn average(models: &[Network]) -> Result<Network> {
    let [first, ..] = models else {
        return Err(FerError::Config("averaging needs at least one model".into()));
    };
    if let Some(other) = models.iter().find(|m| m.spec() != first.spec()) {
        return Err(FerError::Config(format!(
            "only models of one architecture can be averaged: '{}' and '{}' differ",
            first.spec().name,
            other.spec().name
        )));
    }
    let mut averaged = Network::new(first.spec().clone(), 0)?;
    let sources: Vec<_> = models.iter().map(Network::named_tensors).collect();
    let share = 1.0 / models.len() as f32;
    for (index, (_, target)) in averaged.named_tensors_mut().into_iter().enumerate() {
        target.fill(0.0);
        for source in &sources {
            target.zip_mut_with(source[index].1, |t, &v| *t += share * v);
        }
    }
    Ok(averaged)
}

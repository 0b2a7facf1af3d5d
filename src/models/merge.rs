//! Several trained models of one architecture as one network whose logits are the mean of
//! theirs: an ensemble that is an ordinary network, so the page, `fer eval`, test-time
//! augmentation and f16/int8 files handle it unchanged.
//!
//! The members sit side by side, member `m`'s channels (or features) in block `m`:
//! - the first layer with weights reads the shared input and gets every member's filters;
//! - later convolutions become grouped convolutions, a member's groups reading only its own
//!   channels; later hidden dense layers become block-diagonal (zeros between members);
//! - the classifier (the last layer, dense) concatenates the members' weights divided by their
//!   count and averages their biases, so the logits are the mean of the members' logits;
//! - batch-norm, ReLU, pooling, flatten and dropout act per channel or feature and are kept.
//!
//! Averaging logits rather than probabilities is what makes this one network; for models that
//! agree as often as trained ones do the two rarely pick different classes.

use ndarray::{concatenate, s, Axis, IxDyn};

use crate::engine::{LayerSpec, ModelSpec, Network, Tensor};
use crate::{FerError, Result};

/// How a layer's tensors are combined.
#[derive(Clone, Copy)]
enum Placement {
    /// Every tensor stacked along its first axis (filters, units or channels).
    Stack,
    /// A dense layer reading every member's features: block-diagonal weight, stacked bias.
    BlockDiagonal,
    /// The last layer: weights side by side (or averaged, when it reads the shared input)
    /// and divided by the member count; biases averaged.
    Classifier { shared_input: bool },
    /// No tensors.
    None,
}

/// One network computing the mean of `members`' logits. The members must share one
/// architecture that ends in a dense layer.
pub fn merge(members: &[Network]) -> Result<Network> {
    let [first, rest @ ..] = members else {
        return Err(FerError::Config("merging needs at least one model".into()));
    };
    let spec = first.spec();
    if let Some(other) =
        rest.iter().find(|m| m.spec().input != spec.input || m.spec().layers != spec.layers || m.spec().classes != spec.classes)
    {
        return Err(FerError::Config(format!(
            "only models of one architecture can be merged: '{}' and '{}' differ",
            spec.name,
            other.spec().name
        )));
    }
    let (layers, placements) = side_by_side(&spec.layers, members.len())?;
    let merged_spec = ModelSpec { name: format!("{}-x{}", spec.name, members.len()), input: spec.input, layers, classes: spec.classes };
    let mut merged = Network::new(merged_spec, 0)?;
    for (i, placement) in placements.into_iter().enumerate() {
        let inputs: Vec<Vec<(&str, &Tensor)>> = members.iter().map(|m| m.layer_tensors(i)).collect();
        for (name, target) in merged.layer_tensors_mut(i) {
            let parts: Vec<&Tensor> = inputs
                .iter()
                .map(|tensors| tensors.iter().find(|(n, _)| *n == name).map(|(_, t)| *t))
                .collect::<Option<_>>()
                .ok_or_else(|| FerError::Model(format!("layer {i} has no tensor '{name}' to merge")))?;
            target.assign(&combine(placement, name, &parts)?);
        }
    }
    Ok(merged)
}

/// The merged layer list for `count` members, and how each layer's tensors combine.
fn side_by_side(layers: &[LayerSpec], count: usize) -> Result<(Vec<LayerSpec>, Vec<Placement>)> {
    if !matches!(layers.last(), Some(LayerSpec::Dense { .. })) {
        return Err(FerError::Config("only models whose last layer is dense can be merged (their logits are averaged there)".into()));
    }
    let last = layers.len() - 1;
    // Until the first layer with weights, every member reads the same input.
    let mut shared_input = true;
    let mut merged = Vec::with_capacity(layers.len());
    let mut placements = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let (spec, placement) = match *layer {
            LayerSpec::Conv2d { filters, kernel, stride, padding, groups } => {
                if shared_input && groups != 1 {
                    return Err(FerError::Config(format!("layer {i}: a grouped convolution on the input cannot be merged")));
                }
                let groups = if shared_input { 1 } else { groups * count };
                (LayerSpec::Conv2d { filters: filters * count, kernel, stride, padding, groups }, Placement::Stack)
            }
            LayerSpec::Dense { units } if i == last => (LayerSpec::Dense { units }, Placement::Classifier { shared_input }),
            LayerSpec::Dense { units } => {
                let placement = if shared_input { Placement::Stack } else { Placement::BlockDiagonal };
                (LayerSpec::Dense { units: units * count }, placement)
            }
            LayerSpec::BatchNorm if shared_input => {
                return Err(FerError::Config(format!("layer {i}: batch-norm on the input cannot be merged")));
            }
            LayerSpec::BatchNorm => (LayerSpec::BatchNorm, Placement::Stack),
            ref other => (other.clone(), Placement::None),
        };
        shared_input &= matches!(placement, Placement::None);
        merged.push(spec);
        placements.push(placement);
    }
    Ok((merged, placements))
}

fn combine(placement: Placement, name: &str, parts: &[&Tensor]) -> Result<Tensor> {
    let count = parts.len() as f32;
    let stack = |axis: usize| {
        let views: Vec<_> = parts.iter().map(|t| t.view()).collect();
        concatenate(Axis(axis), &views).map_err(|e| FerError::Model(format!("merging '{name}': {e}")))
    };
    let mean = || parts.iter().fold(Tensor::zeros(parts[0].raw_dim()), |sum, t| sum + *t) / count;
    Ok(match (placement, name) {
        (Placement::Stack, _) | (Placement::BlockDiagonal, "bias") => stack(0)?,
        (Placement::BlockDiagonal, _) => {
            let (units, inputs) = (parts[0].shape()[0], parts[0].shape()[1]);
            let mut weight = Tensor::zeros(IxDyn(&[units * parts.len(), inputs * parts.len()]));
            for (m, part) in parts.iter().enumerate() {
                weight.slice_mut(s![m * units..(m + 1) * units, m * inputs..(m + 1) * inputs]).assign(part);
            }
            weight
        }
        (Placement::Classifier { shared_input: false }, "weight") => stack(1)? / count,
        (Placement::Classifier { .. }, _) => mean(),
        (Placement::None, _) => return Err(FerError::Model(format!("merging '{name}': a layer without weights has a tensor"))),
    })
}

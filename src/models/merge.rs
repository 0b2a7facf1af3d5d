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
//!
//! A member may itself be a merge (named `{base}-x{count}` by this module): it counts as its
//! `count` models, so merging `deep-x2` with one more `deep` gives the equal-weight `deep-x3`
//! that merging the three `deep` models would, without needing the first two apart.

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

/// One network computing the mean of the logits of `members` (a merged member counting as the
/// models it was merged from). The members must share one architecture that ends in a dense layer.
pub fn merge(members: &[Network]) -> Result<Network> {
    let [first, ..] = members else {
        return Err(FerError::Config("merging needs at least one model".into()));
    };
    let spec = first.spec();
    let unmerged: Vec<Unmerged> = members.iter().map(|m| unmerge(m.spec())).collect::<Result<_>>()?;
    let base = &unmerged[0];
    if let Some((other, _)) = members
        .iter()
        .zip(&unmerged)
        .find(|(m, u)| m.spec().input != spec.input || m.spec().classes != spec.classes || u.layers != base.layers)
    {
        return Err(FerError::Config(format!(
            "only models of one architecture can be merged: '{}' and '{}' differ",
            spec.name,
            other.spec().name
        )));
    }
    let counts: Vec<usize> = unmerged.iter().map(|u| u.count).collect();
    let total = counts.iter().sum();
    let (layers, placements) = side_by_side(&base.layers, total)?;
    let merged_spec = ModelSpec { name: format!("{}-x{total}", base.name), input: spec.input, layers, classes: spec.classes };
    let mut merged = Network::new(merged_spec, 0)?;
    for (i, placement) in placements.into_iter().enumerate() {
        let inputs: Vec<Vec<(&str, &Tensor)>> = members.iter().map(|m| m.layer_tensors(i)).collect();
        for (name, target) in merged.layer_tensors_mut(i) {
            let parts: Vec<&Tensor> = inputs
                .iter()
                .map(|tensors| tensors.iter().find(|(n, _)| *n == name).map(|(_, t)| *t))
                .collect::<Option<_>>()
                .ok_or_else(|| FerError::Model(format!("layer {i} has no tensor '{name}' to merge")))?;
            target.assign(&combine(placement, name, &parts, &counts)?);
        }
    }
    Ok(merged)
}

/// A model's architecture before merging: one member's layers, and how many members it holds.
struct Unmerged {
    name: String,
    layers: Vec<LayerSpec>,
    count: usize,
}

/// Undoes [`side_by_side`] for a model named `{base}-x{count}`; any other model is one member.
fn unmerge(spec: &ModelSpec) -> Result<Unmerged> {
    let Some((name, count)) = spec.name.rsplit_once("-x").and_then(|(base, n)| Some((base, n.parse::<usize>().ok()?))) else {
        return Ok(Unmerged { name: spec.name.clone(), layers: spec.layers.clone(), count: 1 });
    };
    let not_a_merge = || FerError::Config(format!("'{}' is named as a merge of {count} models but its layers are not one", spec.name));
    if count == 0 {
        return Err(not_a_merge());
    }
    let divide = |n: usize| n.is_multiple_of(count).then_some(n / count).ok_or_else(not_a_merge);
    let last = spec.layers.len().saturating_sub(1);
    let mut shared_input = true;
    let mut layers = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        let member_layer = match *layer {
            LayerSpec::Conv2d { filters, kernel, stride, padding, groups } => {
                let groups = if shared_input { groups } else { divide(groups)? };
                LayerSpec::Conv2d { filters: divide(filters)?, kernel, stride, padding, groups }
            }
            LayerSpec::Dense { units } if i != last => LayerSpec::Dense { units: divide(units)? },
            ref other => other.clone(),
        };
        shared_input &= !matches!(layer, LayerSpec::Conv2d { .. } | LayerSpec::Dense { .. } | LayerSpec::BatchNorm);
        layers.push(member_layer);
    }
    // Only a layer list that merging would have produced counts as a merge.
    if side_by_side(&layers, count).ok().map(|(merged, _)| merged) != Some(spec.layers.clone()) {
        return Err(not_a_merge());
    }
    Ok(Unmerged { name: name.to_string(), layers, count })
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

/// One merged tensor from the members' `parts`, member `m` standing for `counts[m]` models.
fn combine(placement: Placement, name: &str, parts: &[&Tensor], counts: &[usize]) -> Result<Tensor> {
    let total = counts.iter().sum::<usize>() as f32;
    // Each member's share of the mean of all the models' logits.
    let shares: Vec<f32> = counts.iter().map(|&c| c as f32 / total).collect();
    let stack = |axis: usize, weighted: bool| {
        let views: Vec<Tensor> = parts.iter().zip(&shares).map(|(t, share)| if weighted { *t * *share } else { (*t).clone() }).collect();
        let views: Vec<_> = views.iter().map(|t| t.view()).collect();
        concatenate(Axis(axis), &views).map_err(|e| FerError::Model(format!("merging '{name}': {e}")))
    };
    let weighted_mean = || parts.iter().zip(&shares).fold(Tensor::zeros(parts[0].raw_dim()), |sum, (t, share)| sum + *t * *share);
    Ok(match (placement, name) {
        (Placement::Stack, _) | (Placement::BlockDiagonal, "bias") => stack(0, false)?,
        (Placement::BlockDiagonal, _) => {
            let (units, inputs): (usize, usize) =
                parts.iter().map(|p| (p.shape()[0], p.shape()[1])).fold((0, 0), |(u, i), (pu, pi)| (u + pu, i + pi));
            let mut weight = Tensor::zeros(IxDyn(&[units, inputs]));
            let (mut row, mut column) = (0, 0);
            for part in parts {
                let (units, inputs) = (part.shape()[0], part.shape()[1]);
                weight.slice_mut(s![row..row + units, column..column + inputs]).assign(part);
                (row, column) = (row + units, column + inputs);
            }
            weight
        }
        (Placement::Classifier { shared_input: false }, "weight") => stack(1, true)?,
        (Placement::Classifier { .. }, _) => weighted_mean(),
        (Placement::None, _) => return Err(FerError::Model(format!("merging '{name}': a layer without weights has a tensor"))),
    })
}

//! Growing a trained model into a deeper architecture without changing what it computes
//! (Net2DeeperNet: Chen, Goodfellow and Shlens, "Net2Net", 2016). Training the deeper net then
//! starts from everything the smaller one learned instead of from random weights: on two CPU
//! cores that is the difference between a few hours and a few days.

use crate::engine::layers::BATCH_NORM_EPSILON;
use crate::engine::{LayerSpec, ModelSpec, Network, Padding, Tensor};
use crate::{FerError, Result};

/// Builds `spec` from the trained network `small`. Walking both layer lists in order, a layer
/// that `spec` shares with `small` takes its weights; a conv → batch-norm → ReLU that `spec`
/// adds right after a ReLU, with as many filters as input channels, starts as the identity:
/// the conv passes each channel through its kernel's centre, and the batch-norm's scale and shift
/// undo its own normalisation (γ = √(σ² + ε), β = μ), so the ReLU sees non-negative inputs and
/// changes nothing: in evaluation mode the grown net computes exactly what `small` does.
/// `calibrate` measures batch-norm statistics (precise batch-norm over training faces) for
/// the inserted layers, whose μ and σ² are those of their inputs. Any other difference between
/// the two architectures is an error.
pub fn deepen(small: &Network, spec: ModelSpec, seed: u64, mut calibrate: impl FnMut(&mut Network)) -> Result<Network> {
    let from = &small.spec().layers;
    let names = format!("'{}' into '{}'", small.spec().name, spec.name);
    let cannot = |why: String| FerError::Model(format!("cannot grow {names}: {why}"));
    if small.spec().input != spec.input || small.spec().classes != spec.classes {
        return Err(cannot("they differ in input shape or number of classes".into()));
    }
    let to = spec.layers.clone();
    let (mut copied, mut inserted) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while j < to.len() {
        if i < from.len() && from[i] == to[j] {
            copied.push((i, j));
            (i, j) = (i + 1, j + 1);
        } else if starts_identity_block(&to, j) {
            inserted.push(j);
            j += 3;
        } else {
            return Err(cannot(format!(
                "its layer {j} ({:?}) is neither the model's layer {i} ({:?}) nor a 3x3-style conv → batch-norm → ReLU added after a ReLU",
                to[j],
                from.get(i)
            )));
        }
    }
    if i < from.len() {
        return Err(cannot(format!("the model's layers from {i} on ({:?}, ...) have no place in it", from[i])));
    }

    let mut grown = Network::new(spec, seed)?;
    for &conv in &inserted {
        for (name, tensor) in grown.layer_tensors_mut(conv) {
            match name {
                "weight" => set_identity_kernel(tensor).map_err(|why| cannot(format!("layer {conv}: {why}")))?,
                _ => tensor.fill(0.0),
            }
        }
    }
    copy_layers(small, &mut grown, &copied).map_err(&cannot)?;
    // The measurement normalises with batch statistics, so the inserted layers pass their
    // inputs through only nearly unchanged and the later layers' statistics come out a little
    // off: only the inserted layers' statistics are kept, the others are copied back.
    calibrate(&mut grown);
    copy_layers(small, &mut grown, &copied).map_err(&cannot)?;
    for &conv in &inserted {
        let mut tensors = grown.layer_tensors_mut(conv + 1);
        let stat = |tensors: &[(&str, &mut Tensor)], wanted: &str| {
            tensors.iter().find(|(name, _)| *name == wanted).map(|(_, t)| (*t).clone()).expect("batch-norm layers save their statistics")
        };
        let (mean, var) = (stat(&tensors, "running_mean"), stat(&tensors, "running_var"));
        for (name, tensor) in tensors.iter_mut() {
            match *name {
                "gamma" => tensor.assign(&var.mapv(|v| (v + BATCH_NORM_EPSILON).sqrt())),
                "beta" => tensor.assign(&mean),
                _ => {}
            }
        }
    }
    Ok(grown)
}

/// Copies every saved tensor of `small`'s layer `i` into `grown`'s layer `j`, for each `(i, j)`.
fn copy_layers(small: &Network, grown: &mut Network, pairs: &[(usize, usize)]) -> std::result::Result<(), String> {
    for &(i, j) in pairs {
        for ((name, target), (_, value)) in grown.layer_tensors_mut(j).into_iter().zip(small.layer_tensors(i)) {
            if target.shape() != value.shape() {
                return Err(format!("layer {j}'s {name} is {:?}, the model's is {:?}", target.shape(), value.shape()));
            }
            target.assign(value);
        }
    }
    Ok(())
}

/// Whether `layers[j..j + 3]` is a same-size conv → batch-norm → ReLU right after a ReLU, the
/// block that can start as the identity.
fn starts_identity_block(layers: &[LayerSpec], j: usize) -> bool {
    let conv = matches!(layers.get(j), Some(LayerSpec::Conv2d { kernel, stride: 1, padding: Padding::Same, .. }) if kernel % 2 == 1);
    conv && j > 0
        && layers[j - 1] == LayerSpec::Relu
        && layers.get(j + 1) == Some(&LayerSpec::BatchNorm)
        && layers.get(j + 2) == Some(&LayerSpec::Relu)
}

/// `[filters, channels, k, k]` with filters = channels: 1 at the centre tap of each filter's own
/// channel, 0 elsewhere.
fn set_identity_kernel(weight: &mut Tensor) -> std::result::Result<(), String> {
    let &[filters, channels, k, _] = weight.shape() else {
        return Err(format!("a conv weight of shape {:?}", weight.shape()));
    };
    if filters != channels {
        return Err(format!("{filters} filters on {channels} channels cannot start as the identity"));
    }
    weight.fill(0.0);
    for f in 0..filters {
        weight[[f, f, k / 2, k / 2]] = 1.0;
    }
    Ok(())
}

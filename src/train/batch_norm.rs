//! "Precise batch-norm" (Wu & Johnson 2021): every batch-norm layer's running statistics
//! re-measured as the mean of its batch statistics over clean (un-augmented) training faces.
//! Training leaves an exponential average dominated by its last few augmented batches, which
//! measurably misses the clean faces' statistics; weights rounded to int8 shift every channel a
//! little, and statistics measured with the rounded weights absorb the shift.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::trainer::training_inputs;
use super::{derive_seed, RECALIBRATION_STREAM};
use crate::data::Dataset;
use crate::engine::network::batch_tensor;
use crate::engine::{Network, Rng};

/// Training faces measured after each epoch: 32 batches of 256 give steady means, and cost
/// about a tenth of an epoch of FER2013 (a forward pass is about a third of a training step).
pub const RECALIBRATION_FACES: usize = 8192;
/// Faces per forward pass when recalibrating: large batches give steady batch statistics.
const RECALIBRATION_BATCH: usize = 256;

/// Re-measures `network`'s batch-norm statistics on `rows` of `data` as they look at test
/// time, in nearly equal batches of about [`RECALIBRATION_BATCH`] (each batch weighs the same).
pub fn recalibrate_batch_norm(network: &mut Network, data: &Dataset, rows: &[usize]) {
    let batches = rows.len().div_ceil(RECALIBRATION_BATCH);
    let inputs = (0..batches).map(|b| {
        let batch_rows = &rows[b * rows.len() / batches..(b + 1) * rows.len() / batches];
        batch_tensor([1, 48, 48], training_inputs(data, batch_rows, None, 0)).expect("whole faces")
    });
    network.recalibrate_batch_norm(inputs);
}

/// The rows a run measures its statistics on after epoch `epoch`: [`RECALIBRATION_FACES`] of
/// `train_rows` (all of them when fewer), a fresh seeded draw each epoch; none when the
/// network has no batch-norm layer.
pub fn recalibration_rows(network: &Network, train_rows: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    if !network.has_batch_norm() {
        return Vec::new();
    }
    let count = train_rows.len().min(RECALIBRATION_FACES);
    let mut rows = train_rows.to_vec();
    let mut rng = Rng::seed_from_u64(derive_seed(seed, RECALIBRATION_STREAM, epoch as u64));
    let (chosen, _) = rows.partial_shuffle(&mut rng, count);
    chosen.to_vec()
}

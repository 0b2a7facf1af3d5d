//! Direct f32 convolution for evaluation: each block of 4 filters × 8 output columns reads its
//! taps straight from one zero-padded copy of the sample's input, as the integer kernel does
//! (`engine::int8`). No im2col matrix is built and nothing is packed.
//!
//! Why: at batch 128 in V8, building im2col's matrix, packing it for matrixmultiply's sgemm and
//! copying the product out were a quarter of `deep`'s time and 40% of `seed`'s (whose first
//! layer's matrix has only 16 rows: few multiply-adds per value read). The kernel's inner loop
//! is also leaner than the sgemm's: a weight is broadcast by the load itself (`load32_splat`),
//! where the 8x8 sgemm kernel spends a shuffle on every multiply-add to broadcast it.
//!
//! Each sum runs over the taps in im2col's order, one multiply then one add per tap, starting
//! from zero, in blocks of 256 taps added up in order, and the bias is added after: the order
//! of matrixmultiply's wasm simd128 kernel (its depth blocks are 256), so in wasm the output is
//! bit-identical to the gemm path that training uses. Used in wasm only (`Conv2d` chooses):
//! natively the sgemm has AVX and fused multiply-adds, which this kernel does not.

use super::int8::Epilogue;
use super::parallel::for_row_blocks;

/// Filters and output columns one call of the kernel computes (32 sums in 8 SIMD registers).
const BLOCK_FILTERS: usize = 4;
const BLOCK_COLUMNS: usize = 8;
/// Taps summed from zero before being added to the running total: matrixmultiply's `kc`.
const DEPTH_BLOCK: usize = 256;

/// Where a stride-1 convolution reads: input size, groups, kernel, padding, output size.
#[derive(Clone, Copy, Debug)]
pub struct DirectGeometry {
    /// Input channels, all groups together.
    pub channels: usize,
    pub groups: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// A convolution's weights laid out for the kernel, and where each tap's inputs lie.
pub struct DirectConv {
    geometry: DirectGeometry,
    group_filters: usize,
    /// The padded input: rows as the convolution reads them; columns with room for a whole
    /// last block of 8 output columns.
    plane_rows: usize,
    plane_columns: usize,
    /// Per tap `(c, ki, kj)` of a group: where its 8 inputs lie, counted from the block's first
    /// column in the group's first plane.
    offsets: Vec<usize>,
    /// One past the furthest value a block at base 0 reads.
    reach: usize,
    /// Per group, per block of 4 filters, per tap, the 4 filters' weights (zeros past the
    /// group's last filter).
    packed: Vec<f32>,
}

impl DirectConv {
    /// `weight`: `[filters, channels / groups, kernel, kernel]` row-major, filters in
    /// consecutive groups.
    pub fn new(weight: &[f32], filters: usize, geometry: DirectGeometry) -> DirectConv {
        let DirectGeometry { channels, groups, kernel, out_h, out_w, .. } = geometry;
        let taps = channels / groups * kernel * kernel;
        let group_filters = filters / groups;
        let blocks = group_filters.div_ceil(BLOCK_FILTERS);
        let mut packed = vec![0.0f32; groups * blocks * taps * BLOCK_FILTERS];
        for filter in 0..filters {
            let (group, index) = (filter / group_filters, filter % group_filters);
            let block = group * blocks + index / BLOCK_FILTERS;
            for tap in 0..taps {
                packed[(block * taps + tap) * BLOCK_FILTERS + index % BLOCK_FILTERS] = weight[filter * taps + tap];
            }
        }
        let plane_rows = out_h + kernel - 1;
        let plane_columns = out_w.next_multiple_of(BLOCK_COLUMNS) + kernel - 1;
        let offsets = (0..taps)
            .map(|tap| {
                let (c, ki, kj) = (tap / (kernel * kernel), tap / kernel % kernel, tap % kernel);
                (c * plane_rows + ki) * plane_columns + kj
            })
            .collect::<Vec<_>>();
        let reach = offsets.iter().max().map_or(0, |&m| m + BLOCK_COLUMNS);
        DirectConv { geometry, group_filters, plane_rows, plane_columns, offsets, reach, packed }
    }

    /// One sample's input `[channels, in_h, in_w]` copied into the zero-padded planes the
    /// kernel reads.
    pub fn lay_out(&self, x: &[f32], planes: &mut Vec<f32>) {
        let DirectGeometry { channels, in_h, in_w, pad_top, pad_left, .. } = self.geometry;
        planes.clear();
        planes.resize(channels * self.plane_rows * self.plane_columns, 0.0);
        // Input rows and columns the padded geometry never reads (valid padding) are left out.
        let (rows, columns) = (in_h.min(self.plane_rows - pad_top), in_w.min(self.plane_columns - pad_left));
        for (c, channel) in x.chunks_exact(in_h * in_w).enumerate() {
            for (iy, row) in channel.chunks_exact(in_w).take(rows).enumerate() {
                let start = (c * self.plane_rows + iy + pad_top) * self.plane_columns + pad_left;
                planes[start..start + columns].copy_from_slice(&row[..columns]);
            }
        }
    }

    /// `out[f, oy, ox]` = the epilogue of (Σ_tap w[f, tap] · x[tap at (oy, ox)]) + bias[f], for
    /// one sample (`out`: `[filters, out_h · out_w]`) laid out by [`DirectConv::lay_out`].
    /// Split across threads by blocks of filters when large.
    pub fn forward(&self, planes: &[f32], bias: &[f32], epilogue: &Epilogue, out: &mut [f32]) {
        let DirectGeometry { channels, groups, out_h, out_w, .. } = self.geometry;
        let width = out_h * out_w;
        let taps = self.offsets.len();
        let weights_per_block = taps * BLOCK_FILTERS;
        let blocks = self.group_filters.div_ceil(BLOCK_FILTERS);
        let group_len = channels / groups * self.plane_rows * self.plane_columns;
        for (group, out) in out.chunks_mut(self.group_filters * width).enumerate() {
            let group_planes = &planes[group * group_len..][..group_len];
            let group_weights = &self.packed[group * blocks * weights_per_block..][..blocks * weights_per_block];
            let first_filter = group * self.group_filters;
            let block_len = BLOCK_FILTERS * width;
            for_row_blocks(out, block_len, BLOCK_FILTERS * taps * width, |first_block, part| {
                // Row by row, every block of filters: the input rows a row reads stay in cache.
                for oy in 0..out_h {
                    for (b, out_block) in part.chunks_mut(block_len).enumerate() {
                        let block = first_block + b;
                        let weights = &group_weights[block * weights_per_block..][..weights_per_block];
                        for first_column in (0..out_w).step_by(BLOCK_COLUMNS) {
                            let sums = block_sums(weights, group_planes, &self.offsets, self.reach, oy * self.plane_columns + first_column);
                            let targets = oy * out_w + first_column..oy * out_w + out_w.min(first_column + BLOCK_COLUMNS);
                            for (r, row) in out_block.chunks_exact_mut(width).enumerate() {
                                let filter = first_filter + block * BLOCK_FILTERS + r;
                                let targets = &mut row[targets.clone()];
                                targets.iter_mut().zip(&sums[r]).for_each(|(t, &s)| *t = epilogue.apply(filter, s + bias[filter]));
                            }
                        }
                    }
                }
            });
        }
    }
}

/// The 4x8 block of sums over the taps: `weights` is `[tap][4]`, tap `t`'s 8 inputs are at
/// `base + offsets[t]` in `input` (none past `base + reach`); summed from zero in blocks of
/// [`DEPTH_BLOCK`] taps, each block then added to the total so far.
fn block_sums(weights: &[f32], input: &[f32], offsets: &[usize], reach: usize, base: usize) -> [[f32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    debug_assert!(offsets.iter().all(|&offset| offset + BLOCK_COLUMNS <= reach));
    assert!(weights.len() >= offsets.len() * BLOCK_FILTERS && base + reach <= input.len(), "kernel operands too short");
    let mut total = [[0.0f32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (depth, (weights, offsets)) in weights.chunks(DEPTH_BLOCK * BLOCK_FILTERS).zip(offsets.chunks(DEPTH_BLOCK)).enumerate() {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        // SAFETY: the assert above keeps every load inside the two slices.
        let sums = unsafe { block_sums_simd128(weights, input, offsets, base) };
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        let sums = block_sums_portable(weights, input, offsets, base);
        if depth == 0 {
            total = sums;
        } else {
            for (total, sums) in total.iter_mut().zip(&sums) {
                total.iter_mut().zip(sums).for_each(|(t, &s)| *t = s + *t);
            }
        }
    }
    total
}

/// The kernel where there is no SIMD one (natively the compiler vectorises it); the same
/// operations in the same order as the simd128 kernel.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn block_sums_portable(weights: &[f32], input: &[f32], offsets: &[usize], base: usize) -> [[f32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    let mut sums = [[0.0f32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (t, &offset) in offsets.iter().enumerate() {
        let w = &weights[t * BLOCK_FILTERS..][..BLOCK_FILTERS];
        let x = &input[base + offset..][..BLOCK_COLUMNS];
        for (row, &w) in sums.iter_mut().zip(w) {
            row.iter_mut().zip(x).for_each(|(sum, &x)| *sum += w * x);
        }
    }
    sums
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
unsafe fn block_sums_simd128(weights: &[f32], input: &[f32], offsets: &[usize], base: usize) -> [[f32; BLOCK_COLUMNS]; BLOCK_FILTERS] {
    use core::arch::wasm32::*;
    let (w, x) = (weights.as_ptr(), input.as_ptr().add(base));
    let mut acc = [[f32x4_splat(0.0); 2]; BLOCK_FILTERS];
    for (t, &offset) in offsets.iter().enumerate() {
        let x_low = v128_load(x.add(offset) as *const v128);
        let x_high = v128_load(x.add(offset + 4) as *const v128);
        for (r, acc) in acc.iter_mut().enumerate() {
            let weight = v128_load32_splat(w.add(t * BLOCK_FILTERS + r) as *const u32);
            acc[0] = f32x4_add(acc[0], f32x4_mul(weight, x_low));
            acc[1] = f32x4_add(acc[1], f32x4_mul(weight, x_high));
        }
    }
    let mut sums = [[0.0f32; BLOCK_COLUMNS]; BLOCK_FILTERS];
    for (row, acc) in sums.iter_mut().zip(&acc) {
        v128_store(row.as_mut_ptr() as *mut v128, acc[0]);
        v128_store(row.as_mut_ptr().add(4) as *mut v128, acc[1]);
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tensor::larger;

    /// The direct convolution equals the convolution written out, tap by tap in im2col's
    /// order in blocks of 256, bit for bit: padding (same, valid, explicit, even kernels),
    /// partial blocks of filters and columns, groups, patches longer than a depth block, and
    /// the epilogue.
    #[test]
    fn sums_equal_the_convolution_written_out() {
        // (channels, groups, in_h, in_w, kernel, pad_top, pad_left, out_h, out_w, filters)
        for (channels, groups, in_h, in_w, kernel, pad_top, pad_left, out_h, out_w, filters) in [
            (1, 1, 48, 48, 4, 1, 1, 48, 48, 8),
            (8, 1, 6, 6, 2, 0, 0, 6, 6, 16),
            (1, 1, 9, 13, 3, 1, 1, 9, 13, 5),
            (2, 1, 7, 5, 3, 0, 0, 5, 3, 3),
            (3, 1, 5, 10, 1, 0, 0, 5, 10, 6),
            (2, 1, 4, 4, 3, 2, 2, 6, 6, 4),
            (6, 2, 7, 7, 3, 1, 1, 7, 7, 10),
            (60, 1, 5, 9, 3, 1, 1, 5, 9, 4),
            (128, 2, 3, 3, 3, 1, 1, 3, 3, 8),
        ] {
            let geometry = DirectGeometry { channels, groups, in_h, in_w, kernel, pad_top, pad_left, out_h, out_w };
            let taps = channels / groups * kernel * kernel;
            let weight: Vec<f32> = (0..filters * taps).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let bias: Vec<f32> = (0..filters).map(|f| f as f32 / 3.0 - 1.0).collect();
            let x: Vec<f32> = (0..channels * in_h * in_w).map(|i| ((i * 53 % 41) as f32 - 20.0) / 9.0).collect();
            let scale: Vec<f32> = (0..filters).map(|f| 0.5 + f as f32 / 10.0).collect();
            let shift: Vec<f32> = (0..filters).map(|f| 0.25 - f as f32 / 8.0).collect();
            let epilogue = Epilogue { affine: Some((scale.clone(), shift.clone())), relu: true };
            let conv = DirectConv::new(&weight, filters, geometry);
            let mut planes = Vec::new();
            conv.lay_out(&x, &mut planes);
            let mut out = vec![f32::NAN; filters * out_h * out_w];
            conv.forward(&planes, &bias, &epilogue, &mut out);
            let group_channels = channels / groups;
            for (f, oy, ox) in (0..filters).flat_map(|f| (0..out_h).flat_map(move |oy| (0..out_w).map(move |ox| (f, oy, ox)))) {
                let group = f / (filters / groups);
                let mut total = 0.0f32;
                for (depth, block) in (0..taps).collect::<Vec<_>>().chunks(DEPTH_BLOCK).enumerate() {
                    let mut sum = 0.0f32;
                    for &tap in block {
                        let (c, ki, kj) = (group * group_channels + tap / (kernel * kernel), tap / kernel % kernel, tap % kernel);
                        let (iy, ix) = ((oy + ki).wrapping_sub(pad_top), (ox + kj).wrapping_sub(pad_left));
                        let value = if iy < in_h && ix < in_w { x[(c * in_h + iy) * in_w + ix] } else { 0.0 };
                        sum += weight[f * taps + tap] * value;
                    }
                    total = if depth == 0 { sum } else { sum + total };
                }
                let expected = larger((total + bias[f]) * scale[f] + shift[f], 0.0);
                let got = out[(f * out_h + oy) * out_w + ox];
                assert_eq!(got.to_bits(), expected.to_bits(), "{geometry:?}: filter {f}, ({oy}, {ox})");
            }
        }
    }
}

//! Tensor type and the small numeric helpers the layers share.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Axis};

use super::parallel::{for_each_item, parts_for};

/// Every activation and parameter: `f32`, batches laid out `[n, c, h, w]` or `[n, features]`.
pub type Tensor = ArrayD<f32>;

/// The one random generator used everywhere (weights, shuffling, augmentation, dropout):
/// seeded explicitly, portable, so a seed gives the same run natively and in wasm.
pub type Rng = rand_chacha::ChaCha8Rng;

/// Multiply-adds per part of a split product, at least: about 0.1 ms in wasm, enough to
/// outweigh handing the part to another thread and packing one operand again for it.
const GEMM_PART_MACS: usize = 2 << 20;

/// `c = alpha * a · b + beta * c` on row-major slices, through matrixmultiply's sgemm
/// (AVX/FMA natively, simd128 in wasm). Views may be transposed with `.t()` at no cost.
///
/// A large product that is not already one of several parallel batch chunks (one camera face,
/// the face detector) is split into parts of `c`, computed in parallel: by columns when `a` is
/// the smaller operand (each part packs `a` again), else by rows. Each element's sum runs over
/// the same `k` in the same order either way, so the result is bit-identical to the whole
/// product (tested).
pub fn gemm(alpha: f32, a: &ArrayView2<f32>, b: &ArrayView2<f32>, beta: f32, c: &mut ArrayViewMut2<f32>) {
    let (rows, inner, cols) = (a.nrows(), a.ncols(), b.ncols());
    let parts = parts_for(rows * inner * cols, GEMM_PART_MACS);
    if parts < 2 {
        general_mat_mul(alpha, a, b, beta, c);
    } else if rows <= cols {
        let part_cols = cols.div_ceil(parts);
        let parts: Vec<_> = b.axis_chunks_iter(Axis(1), part_cols).zip(c.axis_chunks_iter_mut(Axis(1), part_cols)).collect();
        for_each_item(parts, |(b, mut c)| general_mat_mul(alpha, a, &b, beta, &mut c));
    } else {
        let part_rows = rows.div_ceil(parts);
        let parts: Vec<_> = a.axis_chunks_iter(Axis(0), part_rows).zip(c.axis_chunks_iter_mut(Axis(0), part_rows)).collect();
        for_each_item(parts, |(a, mut c)| general_mat_mul(alpha, &a, b, beta, &mut c));
    }
}

/// The larger of two values, by one comparison. `f32::max` treats NaN specially and so is a
/// library call in wasm (`fmaxf`), which costs more than the rest of a ReLU or a pooling
/// step; activations are never NaN.
#[inline]
pub fn larger(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Borrow `data` as a `[rows, cols]` matrix. Callers size their buffers from layer shapes,
/// so a mismatch is a programming error, not a user error.
pub fn matrix(data: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), data).expect("matrix view: buffer size matches shape")
}

pub fn matrix_mut(data: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), data).expect("matrix view: buffer size matches shape")
}

/// A tensor's elements as one contiguous slice (our tensors are always standard layout).
pub fn as_slice(t: &Tensor) -> &[f32] {
    t.as_slice().expect("tensors are kept in standard (C) layout")
}

pub fn as_slice_mut(t: &mut Tensor) -> &mut [f32] {
    t.as_slice_mut().expect("tensors are kept in standard (C) layout")
}

/// Makes a tensor contiguous in standard layout, copying only when it is not already.
pub fn standard(t: Tensor) -> Tensor {
    if t.is_standard_layout() {
        t
    } else {
        t.as_standard_layout().into_owned()
    }
}

// Natively, in a pool of 4 threads whatever the machine, so that products do split.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng as _, SeedableRng};

    fn random(rows: usize, cols: usize, rng: &mut Rng) -> Array2<f32> {
        Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-1.0..1.0))
    }

    #[test]
    fn split_products_are_bit_identical_to_whole_ones() {
        rayon::ThreadPoolBuilder::new().num_threads(4).build().expect("a test pool").install(split_products_match);
    }

    fn split_products_match() {
        let mut rng = Rng::seed_from_u64(7);
        // Wide (split by columns), tall (split by rows), transposed operands, ragged edges,
        // an inner size past matrixmultiply's k-blocking, and beta accumulating into c.
        for (rows, inner, cols, transposed, beta) in
            [(32, 288, 2304, false, 0.0), (256, 1152, 36, false, 0.0), (64, 1300, 531, true, 1.0), (1000, 700, 9, true, 0.5)]
        {
            assert!(parts_for(rows * inner * cols, GEMM_PART_MACS) >= 2, "the case must be large enough to split");
            let a = if transposed { random(inner, rows, &mut rng).reversed_axes() } else { random(rows, inner, &mut rng) };
            let b = random(inner, cols, &mut rng);
            let c0 = random(rows, cols, &mut rng);
            let mut whole = c0.clone();
            general_mat_mul(0.5, &a.view(), &b.view(), beta, &mut whole.view_mut());
            let mut split = c0.clone();
            gemm(0.5, &a.view(), &b.view(), beta, &mut split.view_mut());
            let differing = whole.iter().zip(&split).filter(|(w, s)| w.to_bits() != s.to_bits()).count();
            assert_eq!(differing, 0, "{rows}x{inner}x{cols}: {differing} elements differ");
        }
    }
}

//! Tensor type and the small numeric helpers the layers share.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2};

/// Every activation and parameter: `f32`, batches laid out `[n, c, h, w]` or `[n, features]`.
pub type Tensor = ArrayD<f32>;

/// The one random generator used everywhere (weights, shuffling, augmentation, dropout):
/// seeded explicitly, portable, so a seed gives the same run natively and in wasm.
pub type Rng = rand_chacha::ChaCha8Rng;

/// `c = alpha * a · b + beta * c` on row-major slices, through matrixmultiply's sgemm
/// (AVX/FMA natively, simd128 in wasm). Views may be transposed with `.t()` at no cost.
pub fn gemm(alpha: f32, a: &ArrayView2<f32>, b: &ArrayView2<f32>, beta: f32, c: &mut ArrayViewMut2<f32>) {
    general_mat_mul(alpha, a, b, beta, c);
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

//! 2-D convolution through im2col + sgemm: for sample `x` `[c, h, w]`, `cols = im2col(x)` is
//! `[c·k·k, oh·ow]` and the output is `weight [f, c·k·k] · cols + bias`. The samples of a chunk
//! (see `parallel`) sit side by side in one `cols` matrix, so each chunk is one large gemm.
//! Backward recomputes `cols` instead of keeping it, which costs a memory pass but keeps
//! training memory at the size of the activations (this matters in wasm).
//!
//! With `groups > 1` the channels and filters are split into that many groups and each
//! group of filters sees only its group of channels (as in AlexNet and ResNeXt): `cols`'s rows
//! are ordered by channel, so group `g` is one band of rows and one gemm per group does it.

use ndarray::IxDyn;

use super::{fan_in_uniform, Layer, Mode, Padding, Param};
use crate::engine::direct::{DirectConv, DirectGeometry};
use crate::engine::int8::{ConvGeometry, Epilogue, Int8Conv};
use crate::engine::parallel::{for_each_item, map_ranges, map_sample_chunks};
use crate::engine::tensor::{as_slice, as_slice_mut, gemm, matrix, matrix_mut, Rng, Tensor};

pub struct Conv2d {
    in_channels: usize,
    in_h: usize,
    in_w: usize,
    filters: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    pad_top: usize,
    pad_left: usize,
    out_h: usize,
    out_w: usize,
    /// `[filters, in_channels / groups, kernel, kernel]`
    weight: Param,
    /// `[filters]`
    bias: Param,
    input: Option<Tensor>,
    /// Evaluate in integer arithmetic (see `engine::int8`); training always uses f32.
    int8_inference: bool,
    /// This convolution in integer form (rounded weights, where each tap reads its input), made
    /// on the first integer forward pass and dropped whenever the weights may change (`params_mut`).
    int8_conv: Option<Int8Conv>,
    /// This convolution laid out for `engine::direct`, where that is used (evaluation in f32 of
    /// a short patch), made and dropped as `int8_conv` is.
    direct_conv: Option<DirectConv>,
}

/// Output length and padding before the first element along one axis.
fn axis_geometry(input: usize, kernel: usize, stride: usize, padding: Padding) -> Result<(usize, usize), String> {
    match padding {
        Padding::Valid => {
            if input < kernel {
                return Err(format!("kernel {kernel} is larger than the input ({input}) with valid padding"));
            }
            Ok(((input - kernel) / stride + 1, 0))
        }
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(input);
            Ok((out, total / 2))
        }
        Padding::Explicit(pad) => {
            if input + 2 * pad < kernel {
                return Err(format!("kernel {kernel} is larger than the padded input ({})", input + 2 * pad));
            }
            Ok(((input + 2 * pad - kernel) / stride + 1, pad))
        }
    }
}

impl Conv2d {
    pub fn new(
        [in_channels, in_h, in_w]: [usize; 3],
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        groups: usize,
        rng: &mut Rng,
    ) -> Result<Conv2d, String> {
        if groups == 0 || !in_channels.is_multiple_of(groups) || !filters.is_multiple_of(groups) {
            return Err(format!("{groups} groups do not divide {in_channels} input channels and {filters} filters evenly"));
        }
        let (out_h, pad_top) = axis_geometry(in_h, kernel, stride, padding)?;
        let (out_w, pad_left) = axis_geometry(in_w, kernel, stride, padding)?;
        let fan_in = in_channels / groups * kernel * kernel;
        let weight = fan_in_uniform(&[filters, in_channels / groups, kernel, kernel], fan_in, rng);
        let bias = fan_in_uniform(&[filters], fan_in, rng);
        Ok(Conv2d {
            in_channels,
            in_h,
            in_w,
            filters,
            kernel,
            stride,
            groups,
            pad_top,
            pad_left,
            out_h,
            out_w,
            weight: Param::new(weight, true),
            bias: Param::new(bias, false),
            input: None,
            int8_inference: false,
            int8_conv: None,
            direct_conv: None,
        })
    }

    pub fn output_shape(&self) -> [usize; 3] {
        [self.filters, self.out_h, self.out_w]
    }

    /// Rows of `cols`: every input channel's `k·k` taps.
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// The rows of `cols` (and columns of `weight`) one group of filters sees.
    fn group_patch_len(&self) -> usize {
        self.patch_len() / self.groups
    }

    fn group_filters(&self) -> usize {
        self.filters / self.groups
    }

    fn in_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    fn out_len(&self) -> usize {
        self.filters * self.out_h * self.out_w
    }

    /// For output column `ox` and kernel column `kj`, the input column is `ox·stride + kj − pad_left`.
    /// Returns the range of `ox` for which it is inside the image (stride 1 only).
    fn valid_columns(&self, kj: usize) -> (usize, usize, isize) {
        let shift = kj as isize - self.pad_left as isize;
        let lo = (-shift).clamp(0, self.out_w as isize) as usize;
        let hi = (self.in_w as isize - shift).clamp(lo as isize, self.out_w as isize) as usize;
        (lo, hi, shift)
    }

    fn input_row(&self, oy: usize, ki: usize) -> Option<usize> {
        let iy = (oy * self.stride + ki) as isize - self.pad_top as isize;
        (0..self.in_h as isize).contains(&iy).then_some(iy as usize)
    }

    /// Writes sample `x`'s patches into columns `offset..offset + oh·ow` of `cols`, a
    /// `[c·k·k, width]` matrix holding several samples side by side.
    fn im2col(&self, x: &[f32], cols: &mut [f32], width: usize, offset: usize) {
        let ohw = self.out_h * self.out_w;
        for row in 0..self.patch_len() {
            self.patch_row(x, row, &mut cols[row * width + offset..][..ohw]);
        }
    }

    /// Row `row` (channel `c`, kernel tap `(ki, kj)`, as `(c·k + ki)·k + kj`) of sample `x`'s
    /// im2col matrix: that tap's input pixel for every output position, 0 outside the image.
    fn patch_row(&self, x: &[f32], row: usize, out: &mut [f32]) {
        let (k, plane_len) = (self.kernel, self.in_h * self.in_w);
        let (c, ki, kj) = (row / (k * k), row / k % k, row % k);
        let plane = &x[c * plane_len..(c + 1) * plane_len];
        let (lo, hi, shift) = self.valid_columns(kj);
        for (oy, out_row) in out.chunks_exact_mut(self.out_w).enumerate() {
            let Some(iy) = self.input_row(oy, ki) else {
                out_row.fill(0.0);
                continue;
            };
            let in_row = &plane[iy * self.in_w..(iy + 1) * self.in_w];
            if self.stride == 1 {
                out_row[..lo].fill(0.0);
                let start = (lo as isize + shift) as usize;
                out_row[lo..hi].copy_from_slice(&in_row[start..start + hi - lo]);
                out_row[hi..].fill(0.0);
            } else {
                for (ox, value) in out_row.iter_mut().enumerate() {
                    let ix = (ox * self.stride + kj) as isize - self.pad_left as isize;
                    *value = if (0..self.in_w as isize).contains(&ix) { in_row[ix as usize] } else { 0.0 };
                }
            }
        }
    }

    /// The evaluation forward pass in integer arithmetic: each sample's input rounded to 16 bits
    /// with its own scale (so a face's result does not depend on the other faces of a batch).
    fn forward_int8(&mut self, input: &Tensor, epilogue: &Epilogue) -> Tensor {
        if self.int8_conv.is_none() {
            let geometry = ConvGeometry {
                channels: self.in_channels,
                groups: self.groups,
                in_h: self.in_h,
                in_w: self.in_w,
                kernel: self.kernel,
                stride: self.stride,
                pad_top: self.pad_top,
                pad_left: self.pad_left,
                out_h: self.out_h,
                out_w: self.out_w,
            };
            self.int8_conv = Some(Int8Conv::new(as_slice(&self.weight.value), self.filters, geometry));
        }
        let this = &*self;
        let conv = this.int8_conv.as_ref().expect("made above");
        let n = input.shape()[0];
        let mut output = Tensor::zeros(IxDyn(&[n, this.filters, this.out_h, this.out_w]));
        let (ohw, in_len, out_len) = (this.out_h * this.out_w, this.in_len(), this.out_len());
        let group_filters = this.group_filters();
        let x = as_slice(input);
        let bias = as_slice(&this.bias.value);
        map_sample_chunks(as_slice_mut(&mut output), out_len, |samples, out| {
            let laid_out: Vec<(f32, Vec<u32>)> = samples
                .map(|sample| {
                    let mut planes = Vec::new();
                    let scale = conv.lay_out(&x[sample * in_len..(sample + 1) * in_len], &mut planes);
                    (scale, planes)
                })
                .collect();
            // Each sample's groups are independent products: done in parallel, a camera frame's
            // few faces keep every thread busy with one hand-off per layer.
            let products = out.chunks_exact_mut(out_len).zip(&laid_out).flat_map(|(out, sample)| {
                out.chunks_exact_mut(group_filters * ohw).enumerate().map(move |(group, out)| (sample, group, out))
            });
            for_each_item(products.collect(), |((scale, planes), group, out)| conv.product(group, planes, *scale, bias, epilogue, out));
        });
        output
    }

    /// Where `engine::direct` computes this convolution, if it does: in wasm, at stride 1
    /// (every preset's). Natively the gemm stays: matrixmultiply picks AVX and fused
    /// multiply-adds at run time there, which the direct kernel does not have.
    fn direct_geometry(&self) -> Option<DirectGeometry> {
        (cfg!(target_arch = "wasm32") && self.stride == 1).then_some(DirectGeometry {
            channels: self.in_channels,
            groups: self.groups,
            in_h: self.in_h,
            in_w: self.in_w,
            kernel: self.kernel,
            pad_top: self.pad_top,
            pad_left: self.pad_left,
            out_h: self.out_h,
            out_w: self.out_w,
        })
    }

    /// The evaluation forward pass in f32 through `engine::direct`, with `epilogue` folded in.
    fn forward_direct(&mut self, input: &Tensor, geometry: DirectGeometry, epilogue: &Epilogue) -> Tensor {
        if self.direct_conv.is_none() {
            self.direct_conv = Some(DirectConv::new(as_slice(&self.weight.value), self.filters, geometry));
        }
        let this = &*self;
        let conv = this.direct_conv.as_ref().expect("made above");
        let n = input.shape()[0];
        let mut output = Tensor::zeros(IxDyn(&[n, this.filters, this.out_h, this.out_w]));
        let (in_len, out_len) = (this.in_len(), this.out_len());
        let x = as_slice(input);
        let bias = as_slice(&this.bias.value);
        map_sample_chunks(as_slice_mut(&mut output), out_len, |samples, out| {
            let mut planes = Vec::new();
            for (sample, out) in samples.zip(out.chunks_exact_mut(out_len)) {
                conv.lay_out(&x[sample * in_len..(sample + 1) * in_len], &mut planes);
                conv.forward(&planes, bias, epilogue, out);
            }
        });
        output
    }

    /// The forward pass through im2col and gemm; in evaluation, with `epilogue` folded into the
    /// pass that adds the bias.
    fn forward_gemm(&self, input: &Tensor, epilogue: &Epilogue) -> Tensor {
        let n = input.shape()[0];
        let mut output = Tensor::zeros(IxDyn(&[n, self.filters, self.out_h, self.out_w]));
        let (patch, ohw, in_len, out_len) = (self.patch_len(), self.out_h * self.out_w, self.in_len(), self.out_len());
        let (group_patch, group_filters) = (self.group_patch_len(), self.group_filters());
        let x = as_slice(input);
        let weight = as_slice(&self.weight.value);
        let bias = as_slice(&self.bias.value);
        map_sample_chunks(as_slice_mut(&mut output), out_len, |samples, out| {
            // One gemm per group for the whole chunk: the weights are packed once, not once per sample.
            let width = samples.len() * ohw;
            let mut cols = vec![0.0f32; patch * width];
            for (j, sample) in samples.clone().enumerate() {
                self.im2col(&x[sample * in_len..(sample + 1) * in_len], &mut cols, width, j * ohw);
            }
            let mut y = vec![0.0f32; self.filters * width];
            let groups = weight.chunks_exact(group_filters * group_patch).zip(cols.chunks_exact(group_patch * width));
            for ((w, c), y) in groups.zip(y.chunks_exact_mut(group_filters * width)) {
                gemm(
                    1.0,
                    &matrix(w, group_filters, group_patch),
                    &matrix(c, group_patch, width),
                    0.0,
                    &mut matrix_mut(y, group_filters, width),
                );
            }
            for j in 0..samples.len() {
                for (f, &b) in bias.iter().enumerate() {
                    let source = &y[f * width + j * ohw..][..ohw];
                    let target = &mut out[j * out_len + f * ohw..][..ohw];
                    target.iter_mut().zip(source).for_each(|(t, v)| *t = epilogue.apply(f, v + b));
                }
            }
        });
        output
    }

    /// The evaluation forward pass, with `epilogue` folded in: in integer arithmetic where that
    /// is switched on, else direct where it can be, else through the gemm.
    fn forward_eval(&mut self, input: &Tensor, epilogue: &Epilogue) -> Tensor {
        if self.int8_inference {
            self.forward_int8(input, epilogue)
        } else if let Some(geometry) = self.direct_geometry() {
            self.forward_direct(input, geometry, epilogue)
        } else {
            self.forward_gemm(input, epilogue)
        }
    }

    /// The adjoint of `im2col`: adds each column entry back onto the input pixel it came from.
    fn col2im(&self, cols: &[f32], width: usize, offset: usize, dx: &mut [f32]) {
        let (k, plane_len, ohw) = (self.kernel, self.in_h * self.in_w, self.out_h * self.out_w);
        for c in 0..self.in_channels {
            let plane = &mut dx[c * plane_len..(c + 1) * plane_len];
            for ki in 0..k {
                for kj in 0..k {
                    let row = &cols[((c * k + ki) * k + kj) * width + offset..][..ohw];
                    let (lo, hi, shift) = self.valid_columns(kj);
                    for oy in 0..self.out_h {
                        let Some(iy) = self.input_row(oy, ki) else { continue };
                        let col_row = &row[oy * self.out_w..(oy + 1) * self.out_w];
                        let in_row = &mut plane[iy * self.in_w..(iy + 1) * self.in_w];
                        if self.stride == 1 {
                            let start = (lo as isize + shift) as usize;
                            for (d, g) in in_row[start..start + hi - lo].iter_mut().zip(&col_row[lo..hi]) {
                                *d += g;
                            }
                        } else {
                            for (ox, g) in col_row.iter().enumerate() {
                                let ix = (ox * self.stride + kj) as isize - self.pad_left as isize;
                                if (0..self.in_w as isize).contains(&ix) {
                                    in_row[ix as usize] += g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Layer for Conv2d {
    fn forward(&mut self, input: Tensor, mode: &mut Mode) -> Tensor {
        let unfused = Epilogue { affine: None, relu: false };
        if matches!(mode, Mode::Eval) {
            return self.forward_eval(&input, &unfused);
        }
        let output = self.forward_gemm(&input, &unfused);
        if mode.is_train() {
            self.input = Some(input);
        }
        output
    }

    fn backward(&mut self, grad_output: Tensor, want_input_grad: bool) -> Option<Tensor> {
        let input = self.input.take().expect("Conv2d::backward needs a training-mode forward first");
        let n = input.shape()[0];
        let this = &*self;
        let (patch, ohw, in_len, out_len) = (this.patch_len(), this.out_h * this.out_w, this.in_len(), this.out_len());
        let (group_patch, group_filters) = (this.group_patch_len(), this.group_filters());
        let x = as_slice(&input);
        let dy_all = as_slice(&grad_output);
        let weight = as_slice(&this.weight.value);

        // Per-chunk weight and bias gradients; `dx` is this chunk's part of the input gradient.
        let chunk_grads = |samples: std::ops::Range<usize>, dx: Option<&mut [f32]>| {
            let width = samples.len() * ohw;
            let mut cols = vec![0.0f32; patch * width];
            // The chunk's output gradients side by side, `[filters, width]`, like its columns.
            let mut dy = vec![0.0f32; this.filters * width];
            for (j, sample) in samples.clone().enumerate() {
                this.im2col(&x[sample * in_len..(sample + 1) * in_len], &mut cols, width, j * ohw);
                for f in 0..this.filters {
                    dy[f * width + j * ohw..][..ohw].copy_from_slice(&dy_all[sample * out_len + f * ohw..][..ohw]);
                }
            }
            // Per group g: dw_g = dy_g · cols_gᵀ and dcols_g = w_gᵀ · dy_g.
            let mut dw = vec![0.0f32; this.filters * group_patch];
            let per_group = dy.chunks_exact(group_filters * width).zip(cols.chunks_exact(group_patch * width));
            for ((dy, c), dw) in per_group.zip(dw.chunks_exact_mut(group_filters * group_patch)) {
                let (dy, c) = (matrix(dy, group_filters, width), matrix(c, group_patch, width));
                gemm(1.0, &dy, &c.t(), 0.0, &mut matrix_mut(dw, group_filters, group_patch));
            }
            let db: Vec<f32> = dy.chunks_exact(width).map(|row| row.iter().sum()).collect();
            if let Some(dx) = dx {
                let mut dcols = cols;
                let per_group = weight.chunks_exact(group_filters * group_patch).zip(dy.chunks_exact(group_filters * width));
                for ((w, dy), dc) in per_group.zip(dcols.chunks_exact_mut(group_patch * width)) {
                    let (w, dy) = (matrix(w, group_filters, group_patch), matrix(dy, group_filters, width));
                    gemm(1.0, &w.t(), &dy, 0.0, &mut matrix_mut(dc, group_patch, width));
                }
                for j in 0..samples.len() {
                    this.col2im(&dcols, width, j * ohw, &mut dx[j * in_len..(j + 1) * in_len]);
                }
            }
            (dw, db)
        };

        let mut grad_input = None;
        let partials = if want_input_grad {
            let mut dx = Tensor::zeros(input.raw_dim());
            let partials = map_sample_chunks(as_slice_mut(&mut dx), in_len, |samples, dx| chunk_grads(samples, Some(dx)));
            grad_input = Some(dx);
            partials
        } else {
            map_ranges(n, |samples| chunk_grads(samples, None))
        };
        let (weight_grad, bias_grad) = (as_slice_mut(&mut self.weight.grad), as_slice_mut(&mut self.bias.grad));
        for (dw, db) in partials {
            weight_grad.iter_mut().zip(&dw).for_each(|(g, d)| *g += d);
            bias_grad.iter_mut().zip(&db).for_each(|(g, d)| *g += d);
        }
        grad_input
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.int8_conv = None;
        self.direct_conv = None;
        vec![&mut self.weight, &mut self.bias]
    }

    fn set_int8_inference(&mut self, on: bool) {
        self.int8_inference = on;
    }

    fn forward_fused(&mut self, input: &Tensor, epilogue: &Epilogue) -> Option<Tensor> {
        Some(self.forward_eval(input, epilogue))
    }

    fn param_names(&self) -> &'static [&'static str] {
        &["weight", "bias"]
    }

    fn macs(&self) -> usize {
        self.filters * self.group_patch_len() * self.out_h * self.out_w
    }
}

//! Pooling over `[n, c, h, w]`: max and average with a square window (no padding; the output
//! is `(in − window) / stride + 1`), and global average pooling to `[n, c]`.

use ndarray::IxDyn;

use super::{Layer, Mode};
use crate::engine::parallel::map_sample_chunks;
use crate::engine::tensor::{as_slice, as_slice_mut, Tensor};

/// Window geometry shared by max and average pooling.
#[derive(Clone, Copy)]
struct Window {
    channels: usize,
    in_h: usize,
    in_w: usize,
    size: usize,
    stride: usize,
    out_h: usize,
    out_w: usize,
}

impl Window {
    fn new([channels, in_h, in_w]: [usize; 3], size: usize, stride: usize) -> Window {
        let out_h = (in_h - size) / stride + 1;
        let out_w = (in_w - size) / stride + 1;
        Window { channels, in_h, in_w, size, stride, out_h, out_w }
    }

    fn output_shape(&self) -> [usize; 3] {
        [self.channels, self.out_h, self.out_w]
    }

    /// Calls `visit(output_index, first_input_index)` for every output of every plane; the window
    /// covers `size` rows of `size` inputs from there, rows `in_w` apart.
    fn for_each(&self, planes: usize, mut visit: impl FnMut(usize, usize)) {
        let (in_plane, out_plane) = (self.in_h * self.in_w, self.out_h * self.out_w);
        for plane in 0..planes {
            for oy in 0..self.out_h {
                for ox in 0..self.out_w {
                    let start = plane * in_plane + oy * self.stride * self.in_w + ox * self.stride;
                    visit(plane * out_plane + oy * self.out_w + ox, start);
                }
            }
        }
    }

    /// Evaluation's max-pooling of `planes` whole planes: per output row, the maxima down each
    /// input column of its window rows (a loop over contiguous rows that vectorises), then
    /// across each window's columns. Much faster than searching each window in turn, which
    /// was half of `seed`'s time at batch 128 (8x8 windows).
    fn max_planes(&self, x: &[f32], y: &mut [f32]) {
        let (in_plane, out_plane) = (self.in_h * self.in_w, self.out_h * self.out_w);
        let columns = (self.out_w - 1) * self.stride + self.size;
        let mut column_max = vec![0.0f32; columns];
        for (x, y) in x.chunks_exact(in_plane).zip(y.chunks_exact_mut(out_plane)) {
            for (oy, y) in y.chunks_exact_mut(self.out_w).enumerate() {
                let mut rows = x[oy * self.stride * self.in_w..].chunks(self.in_w).take(self.size);
                column_max.copy_from_slice(&rows.next().expect("a window has a row")[..columns]);
                for row in rows {
                    column_max.iter_mut().zip(row).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
                }
                for (ox, y) in y.iter_mut().enumerate() {
                    let window = &column_max[ox * self.stride..][..self.size];
                    *y = window[1..].iter().fold(window[0], |m, &v| if v > m { v } else { m });
                }
            }
        }
    }

    /// The flat input indices of the window starting at `start`.
    fn indices(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.size).flat_map(move |dy| {
            let row = start + dy * self.in_w;
            row..row + self.size
        })
    }
}

pub struct MaxPool2d {
    window: Window,
    /// Training mode: per output, the flat index in the input of its window's maximum, and the
    /// input's shape. Backward sends each gradient there, instead of searching each window again.
    winners: Option<(Vec<u32>, IxDyn)>,
}

impl MaxPool2d {
    pub fn new(input: [usize; 3], size: usize, stride: usize) -> MaxPool2d {
        MaxPool2d { window: Window::new(input, size, stride), winners: None }
    }

    pub fn output_shape(&self) -> [usize; 3] {
        self.window.output_shape()
    }

    /// The index (in `x`) of the window's first largest value.
    fn argmax(&self, x: &[f32], start: usize) -> usize {
        self.window.indices(start).fold(start, |best, i| if x[i] > x[best] { i } else { best })
    }
}

impl Layer for MaxPool2d {
    fn forward(&mut self, input: Tensor, mode: &mut Mode) -> Tensor {
        let n = input.shape()[0];
        let [c, oh, ow] = self.output_shape();
        let x = as_slice(&input);
        let (in_len, out_len) = (c * self.window.in_h * self.window.in_w, c * oh * ow);
        let this = &*self;
        if !mode.is_train() {
            // Evaluation (the camera's hot path) needs only the maxima.
            let mut output = Tensor::zeros(IxDyn(&[n, c, oh, ow]));
            map_sample_chunks(as_slice_mut(&mut output), out_len, |samples, y| {
                this.window.max_planes(&x[samples.start * in_len..samples.end * in_len], y);
            });
            return output;
        }
        let mut winners = vec![0u32; n * out_len];
        map_sample_chunks(&mut winners, out_len, |samples, winners| {
            let first = samples.start * in_len;
            let x = &x[first..samples.end * in_len];
            this.window.for_each(samples.len() * c, |out_index, start| winners[out_index] = (first + this.argmax(x, start)) as u32);
        });
        let maxima = winners.iter().map(|&i| x[i as usize]).collect();
        self.winners = Some((winners, input.raw_dim()));
        Tensor::from_shape_vec(IxDyn(&[n, c, oh, ow]), maxima).expect("one maximum per output")
    }

    fn backward(&mut self, grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let (winners, input_shape) = self.winners.take().expect("MaxPool2d::backward needs a training-mode forward first");
        let [c, oh, ow] = self.output_shape();
        let (in_len, out_len) = (c * self.window.in_h * self.window.in_w, c * oh * ow);
        let mut dx = Tensor::zeros(input_shape);
        let dy = as_slice(&grad_output);
        map_sample_chunks(as_slice_mut(&mut dx), in_len, |samples, dx| {
            let first = samples.start * in_len;
            let outputs = samples.start * out_len..samples.end * out_len;
            for (&winner, &g) in winners[outputs.clone()].iter().zip(&dy[outputs]) {
                dx[winner as usize - first] += g;
            }
        });
        Some(dx)
    }
}

pub struct AvgPool2d {
    window: Window,
    input_shape: Vec<usize>,
}

impl AvgPool2d {
    pub fn new(input: [usize; 3], size: usize, stride: usize) -> AvgPool2d {
        AvgPool2d { window: Window::new(input, size, stride), input_shape: Vec::new() }
    }

    pub fn output_shape(&self) -> [usize; 3] {
        self.window.output_shape()
    }
}

impl Layer for AvgPool2d {
    fn forward(&mut self, input: Tensor, _mode: &mut Mode) -> Tensor {
        let n = input.shape()[0];
        let [c, oh, ow] = self.output_shape();
        let mut output = Tensor::zeros(IxDyn(&[n, c, oh, ow]));
        let x = as_slice(&input);
        let y = as_slice_mut(&mut output);
        let scale = 1.0 / (self.window.size * self.window.size) as f32;
        let window = self.window;
        window.for_each(n * c, |out_index, start| {
            y[out_index] = window.indices(start).map(|i| x[i]).sum::<f32>() * scale;
        });
        self.input_shape = input.shape().to_vec();
        output
    }

    fn backward(&mut self, grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let mut dx = Tensor::zeros(IxDyn(&self.input_shape));
        let dx_slice = as_slice_mut(&mut dx);
        let dy = as_slice(&grad_output);
        let scale = 1.0 / (self.window.size * self.window.size) as f32;
        let n = self.input_shape[0];
        let window = self.window;
        window.for_each(n * window.channels, |out_index, start| {
            for i in window.indices(start) {
                dx_slice[i] += dy[out_index] * scale;
            }
        });
        Some(dx)
    }
}

pub struct GlobalAvgPool {
    input: [usize; 3],
    batch: usize,
}

impl GlobalAvgPool {
    pub fn new(input: [usize; 3]) -> GlobalAvgPool {
        GlobalAvgPool { input, batch: 0 }
    }
}

impl Layer for GlobalAvgPool {
    fn forward(&mut self, input: Tensor, _mode: &mut Mode) -> Tensor {
        let [c, h, w] = self.input;
        self.batch = input.shape()[0];
        let plane = h * w;
        let means: Vec<f32> = as_slice(&input).chunks_exact(plane).map(|p| p.iter().sum::<f32>() / plane as f32).collect();
        Tensor::from_shape_vec(IxDyn(&[self.batch, c]), means).expect("one mean per plane")
    }

    fn backward(&mut self, grad_output: Tensor, _want_input_grad: bool) -> Option<Tensor> {
        let [c, h, w] = self.input;
        let plane = h * w;
        let mut dx = Tensor::zeros(IxDyn(&[self.batch, c, h, w]));
        for (dx_plane, g) in as_slice_mut(&mut dx).chunks_exact_mut(plane).zip(as_slice(&grad_output)) {
            dx_plane.fill(g / plane as f32);
        }
        Some(dx)
    }
}

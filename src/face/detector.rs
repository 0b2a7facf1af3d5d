//! The TinyFaceDetector network of face-api.js, evaluated here in Rust: a Tiny-YOLOv2-like
//! detector with depthwise-separable convolutions (about 190 KB of uint8-quantised weights, MIT
//! licence), read from the TensorFlow.js files that the npm package `@vladmandic/face-api`
//! ships (`model/tiny_face_detector_model.bin` and its weights manifest).
//!
//! The forward pass follows face-api.js's `TinyYolov2Base.runMobilenet` exactly: the frame is
//! scaled to fit an `input_size` square at its top-left (the rest black), centred on the
//! training set's mean colour and divided by 255; then a 3x3 convolution (no padding) and five
//! separable 3x3 convolutions, each with leaky ReLU (slope 0.1) and a 2x2 max-pool after it,
//! and a 1x1 convolution that gives, for each cell of a grid `input_size / 32` wide and each of
//! five anchor boxes, the box offsets and a face score. Activations are kept `[h, w, c]` (TF's
//! layout), so each 1x1 convolution is one matrix product.

use std::collections::HashMap;

use super::frame::Frame;
use super::resample::AreaResampler;
use super::tfjs::{read_weights, NamedTensor};
use super::{Detection, Rect};
use crate::engine::parallel::for_row_blocks;
use crate::engine::tensor::{gemm, larger, matrix, matrix_mut};
use crate::{FerError, Result};

/// Anchor box sizes in grid cells (width, height), from face-api.js's `tinyFaceDetector/const.ts`.
const ANCHORS: [(f32, f32); 5] =
    [(1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061), (4.266906, 5.178857), (9.041765, 10.66308)];
/// The mean colour the network was trained with, subtracted from every input pixel.
const MEAN_RGB: [f32; 3] = [117.001, 114.697, 97.404];
/// Boxes that overlap a better one by more than this (intersection over union) are dropped.
const IOU_THRESHOLD: f32 = 0.4;
const LEAKY_SLOPE: f32 = 0.1;
/// Channels after the first convolution and after each separable one.
const CHANNELS: [usize; 6] = [CONV0_FILTERS, 32, 64, 128, 256, 512];
const CONV0_FILTERS: usize = 16;
/// Per anchor: x, y, width, height offsets and the face score (logits).
const VALUES_PER_ANCHOR: usize = 5;
const HEAD_OUTPUTS: usize = ANCHORS.len() * VALUES_PER_ANCHOR;

/// Input sizes the network is run at: multiples of 32 (the grid's cell size), as in face-api.js.
pub const MIN_INPUT_SIZE: usize = 32;
pub const MAX_INPUT_SIZE: usize = 608;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorOptions {
    /// The side of the square the frame is scaled into: larger finds smaller faces, slower.
    pub input_size: usize,
    /// The lowest face score (0–1) reported as a face.
    pub min_score: f32,
}

impl DetectorOptions {
    fn validate(&self) -> Result<()> {
        if !self.input_size.is_multiple_of(32) || !(MIN_INPUT_SIZE..=MAX_INPUT_SIZE).contains(&self.input_size) {
            return Err(FerError::Config(format!(
                "the face detector's input size must be a multiple of 32 from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, got {}",
                self.input_size
            )));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            return Err(FerError::Config(format!("the lowest face score must be between 0 and 1, got {}", self.min_score)));
        }
        Ok(())
    }
}

/// A depthwise 3x3 convolution (padding 1) then a 1x1 one with bias.
struct SeparableConv {
    channels_in: usize,
    channels_out: usize,
    /// `[3, 3, channels_in]`
    depthwise: Vec<f32>,
    /// `[channels_in, channels_out]`
    pointwise: Vec<f32>,
    bias: Vec<f32>,
}

pub struct TinyFaceDetector {
    /// `[3·3·3, 16]`: rows in (ky, kx, channel) order.
    conv0_filters: Vec<f32>,
    conv0_bias: Vec<f32>,
    separable: Vec<SeparableConv>,
    /// `[512, 25]`
    head_filters: Vec<f32>,
    head_bias: Vec<f32>,
    resampler: AreaResampler,
    /// Buffers reused from frame to frame.
    resized_rgb: Vec<f32>,
    input: Vec<f32>,
    activations: Vec<f32>,
    scratch: Vec<f32>,
    pointwise_out: Vec<f32>,
}

fn take_tensor(tensors: &mut HashMap<String, NamedTensor>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let tensor = tensors
        .remove(name)
        .ok_or_else(|| FerError::Model(format!("TinyFaceDetector weights: {name} is missing; is this tiny_face_detector_model?")))?;
    if tensor.shape != shape {
        return Err(FerError::Model(format!("TinyFaceDetector weights: {name} has shape {:?}, expected {shape:?}", tensor.shape)));
    }
    Ok(tensor.values)
}

impl TinyFaceDetector {
    /// Loads the network from face-api.js's `tiny_face_detector_model-weights_manifest.json`
    /// and `tiny_face_detector_model.bin`.
    pub fn from_tfjs(manifest_json: &str, weights: &[u8]) -> Result<TinyFaceDetector> {
        let mut tensors = read_weights(manifest_json, weights)?;
        let conv0_filters = take_tensor(&mut tensors, "conv0/filters", &[3, 3, 3, CONV0_FILTERS])?;
        let conv0_bias = take_tensor(&mut tensors, "conv0/bias", &[CONV0_FILTERS])?;
        let separable = CHANNELS
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                let (channels_in, channels_out) = (pair[0], pair[1]);
                let layer = format!("conv{}", i + 1);
                Ok(SeparableConv {
                    channels_in,
                    channels_out,
                    depthwise: take_tensor(&mut tensors, &format!("{layer}/depthwise_filter"), &[3, 3, channels_in, 1])?,
                    pointwise: take_tensor(&mut tensors, &format!("{layer}/pointwise_filter"), &[1, 1, channels_in, channels_out])?,
                    bias: take_tensor(&mut tensors, &format!("{layer}/bias"), &[channels_out])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let last = CHANNELS[CHANNELS.len() - 1];
        let head_filters = take_tensor(&mut tensors, "conv8/filters", &[1, 1, last, HEAD_OUTPUTS])?;
        let head_bias = take_tensor(&mut tensors, "conv8/bias", &[HEAD_OUTPUTS])?;
        Ok(TinyFaceDetector {
            conv0_filters,
            conv0_bias,
            separable,
            head_filters,
            head_bias,
            resampler: AreaResampler::default(),
            resized_rgb: Vec::new(),
            input: Vec::new(),
            activations: Vec::new(),
            scratch: Vec::new(),
            pointwise_out: Vec::new(),
        })
    }

    /// The faces in `frame`, best first, boxes in frame pixels, into `faces` (cleared first).
    pub fn detect(&mut self, frame: &Frame, options: &DetectorOptions, faces: &mut Vec<Detection>) -> Result<()> {
        let whole_frame = Rect::new(0.0, 0.0, frame.width() as f32, frame.height() as f32);
        self.detect_in(frame, whole_frame, options, faces)
    }

    /// The faces in `region` of `frame` (frame pixels; it may reach past the frame, whose edges
    /// then extend outwards), searched as if the region were the whole frame: best first, boxes
    /// in frame pixels, into `faces` (cleared first). A small region at a small input size
    /// finds a face near where it was for a fraction of a whole-frame search.
    pub fn detect_in(&mut self, frame: &Frame, region: Rect, options: &DetectorOptions, faces: &mut Vec<Detection>) -> Result<()> {
        options.validate()?;
        faces.clear();
        if !(region.width >= 1.0 && region.height >= 1.0) {
            return Err(FerError::Config(format!("a region to search for faces must be at least 1 pixel wide and high, got {region:?}")));
        }
        let size = options.input_size;
        // Scale the region to fit the square, keeping its aspect ratio, as face-api.js does.
        let scale = size as f32 / region.width.max(region.height);
        let resized_width = ((region.width * scale).round() as usize).clamp(1, size);
        let resized_height = ((region.height * scale).round() as usize).clamp(1, size);
        self.resized_rgb.resize(resized_width * resized_height * 3, 0.0);
        self.resampler.resample_rgb(frame, region, resized_width, resized_height, &mut self.resized_rgb)?;
        self.fill_input(size, resized_width, resized_height);

        let cells = self.forward(size, (resized_height, resized_width));
        let cell_size = size as f32 / cells as f32;
        // From input pixels back to frame pixels, per axis (the resized sides were rounded).
        let to_frame_x = region.width / resized_width as f32;
        let to_frame_y = region.height / resized_height as f32;
        for (cell, outputs) in self.activations.chunks_exact(HEAD_OUTPUTS).enumerate() {
            let (row, col) = ((cell / cells) as f32, (cell % cells) as f32);
            for (anchor, v) in ANCHORS.iter().zip(outputs.chunks_exact(VALUES_PER_ANCHOR)) {
                let score = sigmoid(v[4]);
                if score < options.min_score {
                    continue;
                }
                // Offsets are clamped so that an extreme logit cannot make an infinite box.
                let width = v[2].clamp(-10.0, 10.0).exp() * anchor.0 * cell_size;
                let height = v[3].clamp(-10.0, 10.0).exp() * anchor.1 * cell_size;
                let centre_x = (col + sigmoid(v[0])) * cell_size;
                let centre_y = (row + sigmoid(v[1])) * cell_size;
                let rect = Rect::new(
                    region.left + (centre_x - width / 2.0) * to_frame_x,
                    region.top + (centre_y - height / 2.0) * to_frame_y,
                    width * to_frame_x,
                    height * to_frame_y,
                );
                faces.push(Detection { rect, score });
            }
        }
        non_max_suppression(faces);
        Ok(())
    }

    /// The network's input: the resized frame at the square's top-left, black elsewhere, minus
    /// the mean colour, over 255.
    fn fill_input(&mut self, size: usize, resized_width: usize, resized_height: usize) {
        self.input.resize(size * size * 3, 0.0);
        let letterbox = letterbox();
        for (y, row) in self.input.chunks_exact_mut(size * 3).enumerate() {
            for (x, pixel) in row.chunks_exact_mut(3).enumerate() {
                if y < resized_height && x < resized_width {
                    let source = &self.resized_rgb[(y * resized_width + x) * 3..][..3];
                    pixel.iter_mut().zip(source).zip(MEAN_RGB).for_each(|((value, &source), mean)| *value = (source - mean) / 255.0);
                } else {
                    pixel.copy_from_slice(&letterbox);
                }
            }
        }
    }

    /// Runs the network on `self.input` (`[size, size, 3]`, the frame in its top-left
    /// `content` rows and columns); leaves the head's output `[cells, cells, 25]` in
    /// `self.activations` and returns `cells`.
    fn forward(&mut self, size: usize, content: (usize, usize)) -> usize {
        let mut side = conv0_3x3_valid(&self.input, size, content, &self.conv0_filters, &self.conv0_bias, &mut self.scratch);
        side = max_pool_2x2(&self.scratch, side, CONV0_FILTERS, 2, &mut self.activations);
        for (i, layer) in self.separable.iter().enumerate() {
            depthwise_3x3_same(&self.activations, side, layer.channels_in, &layer.depthwise, &mut self.scratch);
            pointwise(
                &self.scratch,
                side * side,
                layer.channels_in,
                &layer.pointwise,
                &layer.bias,
                layer.channels_out,
                true,
                &mut self.pointwise_out,
            );
            // The last pool keeps the grid's size (stride 1), as in face-api.js.
            let stride = if i + 1 == self.separable.len() { 1 } else { 2 };
            side = max_pool_2x2(&self.pointwise_out, side, layer.channels_out, stride, &mut self.activations);
        }
        let last = CHANNELS[CHANNELS.len() - 1];
        pointwise(&self.activations, side * side, last, &self.head_filters, &self.head_bias, HEAD_OUTPUTS, false, &mut self.scratch);
        std::mem::swap(&mut self.activations, &mut self.scratch);
        side
    }
}

/// The input value of a black pixel: the padding around a frame that is not square.
fn letterbox() -> [f32; 3] {
    MEAN_RGB.map(|mean| (0.0 - mean) / 255.0)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The first convolution: 3x3 over the RGB input `[side, side, 3]`, no padding, bias and leaky
/// ReLU; returns the output's side. Written out directly rather than as im2col + sgemm: with
/// 27 inputs per pixel a matrix product spends more on packing than on arithmetic, while here
/// each output pixel is 27 multiply-adds of 16-wide filter rows, which the compiler vectorises.
///
/// Rows from `content.0` and columns from `content.1` on hold [`letterbox`], the padding colour
/// (a 4:3 frame leaves a quarter of the square): a window wholly inside it gives the same output
/// everywhere, computed once and copied (the same sum in the same order, so the same bits).
fn conv0_3x3_valid(input: &[f32], side: usize, content: (usize, usize), filters: &[f32], bias: &[f32], out: &mut Vec<f32>) -> usize {
    let out_side = side - 2;
    out.resize(out_side * out_side * CONV0_FILTERS, 0.0);
    let bias: &[f32; CONV0_FILTERS] = bias.try_into().expect("conv0 bias has 16 values");
    // Each window row: three neighbouring RGB pixels, 9 values in the filters' (kx, channel) order.
    let pixel_out = |window_rows: [&[f32]; 3]| {
        let mut sums = *bias;
        for (ky, values) in window_rows.into_iter().enumerate() {
            for (&value, weights) in values.iter().zip(filters[ky * 9 * CONV0_FILTERS..].chunks_exact(CONV0_FILTERS)) {
                for (s, w) in sums.iter_mut().zip(weights) {
                    *s += value * w;
                }
            }
        }
        sums.map(|s| if s < 0.0 { s * LEAKY_SLOPE } else { s })
    };
    let letterbox_row: Vec<f32> = letterbox().iter().copied().cycle().take(9).collect();
    let letterbox_out = pixel_out([&letterbox_row; 3]);
    let row_len = out_side * CONV0_FILTERS;
    for_row_blocks(out, row_len, row_len * 27, |first_row, rows| {
        for (i, pixel) in rows.chunks_exact_mut(CONV0_FILTERS).enumerate() {
            let (y, x) = (first_row + i / out_side, i % out_side);
            if y >= content.0 || x >= content.1 {
                pixel.copy_from_slice(&letterbox_out);
            } else {
                pixel.copy_from_slice(&pixel_out([0, 1, 2].map(|ky| &input[((y + ky) * side + x) * 3..][..9])));
            }
        }
    });
    out_side
}

/// A 1x1 convolution over `pixels` pixels: `out [pixels, channels_out] = input [pixels,
/// channels_in] · filters + bias`, then leaky ReLU when `leaky`.
#[allow(clippy::too_many_arguments)]
fn pointwise(
    input: &[f32],
    pixels: usize,
    channels_in: usize,
    filters: &[f32],
    bias: &[f32],
    channels_out: usize,
    leaky: bool,
    out: &mut Vec<f32>,
) {
    out.resize(pixels * channels_out, 0.0);
    gemm(
        1.0,
        &matrix(&input[..pixels * channels_in], pixels, channels_in),
        &matrix(filters, channels_in, channels_out),
        0.0,
        &mut matrix_mut(out, pixels, channels_out),
    );
    for row in out.chunks_exact_mut(channels_out) {
        for (v, b) in row.iter_mut().zip(bias) {
            let x = *v + b;
            *v = if leaky && x < 0.0 { x * LEAKY_SLOPE } else { x };
        }
    }
}

/// A depthwise 3x3 convolution with zero padding 1 (size kept): `[side, side, channels]`.
fn depthwise_3x3_same(input: &[f32], side: usize, channels: usize, filters: &[f32], out: &mut Vec<f32>) {
    out.resize(side * side * channels, 0.0);
    let row_len = side * channels;
    for_row_blocks(out, row_len, row_len * 9, |first_row, rows| {
        for (i, sums) in rows.chunks_exact_mut(channels).enumerate() {
            let (y, x) = (first_row + i / side, i % side);
            sums.fill(0.0);
            for ky in 0..3 {
                let Some(sy) = (y + ky).checked_sub(1).filter(|&sy| sy < side) else { continue };
                for kx in 0..3 {
                    let Some(sx) = (x + kx).checked_sub(1).filter(|&sx| sx < side) else { continue };
                    let pixel = &input[(sy * side + sx) * channels..][..channels];
                    let weights = &filters[(ky * 3 + kx) * channels..][..channels];
                    for ((s, p), w) in sums.iter_mut().zip(pixel).zip(weights) {
                        *s += p * w;
                    }
                }
            }
        }
    });
}

/// 2x2 max-pool with TensorFlow's 'same' padding (windows cut at the bottom and right edges):
/// `[side, side, channels]` → `[ceil(side / stride)]²`; returns the new side. A window cut
/// at the edge repeats its last row or column, which leaves the maximum as it is.
fn max_pool_2x2(input: &[f32], side: usize, channels: usize, stride: usize, out: &mut Vec<f32>) -> usize {
    let out_side = side.div_ceil(stride);
    out.resize(out_side * out_side * channels, 0.0);
    let pixel = |y: usize, x: usize| &input[(y * side + x) * channels..][..channels];
    for (i, maxima) in out.chunks_exact_mut(channels).enumerate() {
        let (y0, x0) = ((i / out_side) * stride, (i % out_side) * stride);
        let (y1, x1) = ((y0 + 1).min(side - 1), (x0 + 1).min(side - 1));
        let rows = pixel(y0, x0).iter().zip(pixel(y0, x1)).zip(pixel(y1, x0).iter().zip(pixel(y1, x1)));
        for (m, ((a, b), (c, d))) in maxima.iter_mut().zip(rows) {
            *m = larger(larger(*a, *b), larger(*c, *d));
        }
    }
    out_side
}

/// Keeps the best of each group of overlapping boxes, best first.
pub(crate) fn non_max_suppression(faces: &mut Vec<Detection>) {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = 0;
    for i in 0..faces.len() {
        let candidate = faces[i];
        if faces[..kept].iter().all(|k| k.rect.iou(&candidate.rect) <= IOU_THRESHOLD) {
            faces[kept] = candidate;
            kept += 1;
        }
    }
    faces.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_cuts_windows_at_the_edge_like_tensorflow_same() {
        // 3x3, one channel: stride 2 gives 2x2 with the last row/column pooled alone.
        let input: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut out = Vec::new();
        assert_eq!(max_pool_2x2(&input, 3, 1, 2, &mut out), 2);
        assert_eq!(out, vec![5.0, 6.0, 8.0, 9.0]);
        assert_eq!(max_pool_2x2(&input, 3, 1, 1, &mut out), 3);
        assert_eq!(out, vec![5.0, 6.0, 6.0, 8.0, 9.0, 9.0, 8.0, 9.0, 9.0]);
    }

    #[test]
    fn depthwise_convolution_pads_with_zeros_and_keeps_channels_apart() {
        // 2x2, two channels; channel 0's filter sums the neighbourhood, channel 1's is the centre.
        let input = vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
        let mut filters = vec![0.0; 18];
        for k in 0..9 {
            filters[k * 2] = 1.0;
        }
        filters[4 * 2 + 1] = 1.0;
        let mut out = Vec::new();
        depthwise_3x3_same(&input, 2, 2, &filters, &mut out);
        assert_eq!(out, vec![10.0, 10.0, 10.0, 20.0, 10.0, 30.0, 10.0, 40.0]);
    }

    #[test]
    fn the_first_convolution_is_a_valid_3x3_convolution_over_rgb() {
        // A 4x4 RGB ramp; filter 0 sums every value (bias 1), filter 1 takes the centre pixel's
        // green (bias -100, so leaky ReLU scales it by 0.1), the rest are zero.
        let input: Vec<f32> = (0..48).map(|v| v as f32).collect();
        let mut filters = vec![0.0; 27 * CONV0_FILTERS];
        for k in 0..27 {
            filters[k * CONV0_FILTERS] = 1.0;
        }
        filters[(4 * 3 + 1) * CONV0_FILTERS + 1] = 1.0;
        let mut bias = vec![0.0; CONV0_FILTERS];
        (bias[0], bias[1]) = (1.0, -100.0);
        let mut out = Vec::new();
        assert_eq!(conv0_3x3_valid(&input, 4, (4, 4), &filters, &bias, &mut out), 2);
        let at = |pixel: usize, channel: usize| out[pixel * CONV0_FILTERS + channel];
        // Output (0, 0) covers rows 0-2, columns 0-2: values (y·4 + x)·3 + c.
        let window_sum: f32 = (0..3).flat_map(|y| (0..3).flat_map(move |x| (0..3).map(move |c| ((y * 4 + x) * 3 + c) as f32))).sum();
        assert_eq!(at(0, 0), window_sum + 1.0);
        assert_eq!(at(3, 0), window_sum + 1.0 + 27.0 * 15.0); // one row and one column on: +5 pixels ·3
        assert!((at(0, 1) - (16.0 - 100.0) * LEAKY_SLOPE).abs() < 1e-4); // centre (1, 1), green: 16
        assert!((at(1, 1) - (19.0 - 100.0) * LEAKY_SLOPE).abs() < 1e-4);
        assert!((2..CONV0_FILTERS).all(|c| at(0, c) == 0.0));
    }

    #[test]
    fn windows_inside_the_letterbox_get_the_bits_of_the_full_computation() {
        let side = 12;
        let filters: Vec<f32> = (0..27 * CONV0_FILTERS).map(|i| ((i * 31 % 17) as f32 - 8.0) / 9.0).collect();
        let bias: Vec<f32> = (0..CONV0_FILTERS).map(|i| i as f32 / 7.0 - 1.0).collect();
        for content in [(7, 12), (12, 5), (6, 9), (12, 12)] {
            let input: Vec<f32> = (0..side * side)
                .flat_map(|i| {
                    let (y, x) = (i / side, i % side);
                    let inside = y < content.0 && x < content.1;
                    (0..3).map(move |c| if inside { ((i * 3 + c) * 13 % 29) as f32 / 29.0 - 0.5 } else { letterbox()[c] })
                })
                .collect();
            let (mut skipped, mut computed) = (Vec::new(), Vec::new());
            conv0_3x3_valid(&input, side, content, &filters, &bias, &mut skipped);
            conv0_3x3_valid(&input, side, (side, side), &filters, &bias, &mut computed);
            assert_eq!(skipped, computed, "content {content:?}");
        }
    }

    #[test]
    fn the_pointwise_convolution_is_a_matrix_product_with_bias_and_leaky_relu() {
        let mut out = Vec::new();
        // Two pixels, two channels in, one out: weights (1, 2), bias 0.5.
        pointwise(&[1.0, 1.0, -3.0, 0.0], 2, 2, &[1.0, 2.0], &[0.5], 1, true, &mut out);
        assert_eq!(out, vec![3.5, -2.5 * LEAKY_SLOPE]);
        pointwise(&[-3.0, 0.0], 1, 2, &[1.0, 2.0], &[0.5], 1, false, &mut out);
        assert_eq!(out, vec![-2.5]);
    }

    #[test]
    fn overlapping_boxes_keep_only_the_best() {
        let face = |left: f32, score: f32| Detection { rect: Rect::new(left, 0.0, 10.0, 10.0), score };
        let mut faces = vec![face(0.0, 0.6), face(1.0, 0.9), face(30.0, 0.7)];
        non_max_suppression(&mut faces);
        assert_eq!(faces, vec![face(1.0, 0.9), face(30.0, 0.7)]);
    }
}

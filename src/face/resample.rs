//! Area-averaging resampling (a box filter, like OpenCV's `INTER_AREA`): each output pixel is
//! the mean of the source area it covers, partly covered pixels weighted by how much of them it
//! covers. It shrinks camera frames for the face detector and crops faces to 48x48 without the
//! aliasing of point or bilinear sampling.
//!
//! Hand-written rather than taken from a resize crate: what is needed here is a *fractional*
//! source rectangle that may reach past the frame (a face at the edge), RGBA in and RGB `f32`
//! out, with buffers kept between frames; resize crates resize whole images of one pixel
//! format. The work is separable: each source row is averaged along x once, then rows along y.

use super::frame::Frame;
use super::Rect;
use crate::{FerError, Result};

#[derive(Clone, Copy, Debug)]
struct Tap {
    index: usize,
    weight: f32,
}

/// For one axis, the source pixels each output pixel averages.
#[derive(Default)]
struct AxisTaps {
    /// Output `i` uses `taps[spans[i].0..spans[i].1]`.
    spans: Vec<(usize, usize)>,
    taps: Vec<Tap>,
}

impl AxisTaps {
    /// Plans `outputs` pixels over the source interval `[start, start + length)` of an axis of
    /// `source_len` pixels; area beyond either end takes the edge pixel (the edge extends
    /// outwards), so a face half out of the frame is still framed the same way.
    fn plan(&mut self, start: f64, length: f64, outputs: usize, source_len: usize) {
        self.spans.clear();
        self.taps.clear();
        let step = length / outputs as f64;
        let end_of_source = source_len as f64;
        for i in 0..outputs {
            let a = start + i as f64 * step;
            let b = a + step;
            let first = self.taps.len();
            let mut push = |index: usize, overlap: f64| {
                if overlap > 0.0 {
                    self.taps.push(Tap { index, weight: (overlap / step) as f32 });
                }
            };
            push(0, b.min(0.0) - a);
            let inside_first = a.max(0.0).floor() as usize;
            let inside_end = (b.min(end_of_source).ceil().max(0.0) as usize).min(source_len);
            for p in inside_first..inside_end {
                push(p, b.min(p as f64 + 1.0) - a.max(p as f64));
            }
            push(source_len - 1, b - a.max(end_of_source));
            if self.taps.len() == first {
                // A step below the float precision of its position: take the nearest pixel.
                let nearest = a.clamp(0.0, end_of_source - 1.0) as usize;
                self.taps.push(Tap { index: nearest, weight: 1.0 });
            }
            self.spans.push((first, self.taps.len()));
        }
    }

    fn of(&self, output: usize) -> &[Tap] {
        let (first, end) = self.spans[output];
        &self.taps[first..end]
    }

    /// The lowest and highest source index any output uses.
    fn source_range(&self) -> (usize, usize) {
        let lowest = self.taps.iter().map(|t| t.index).min().unwrap_or(0);
        let highest = self.taps.iter().map(|t| t.index).max().unwrap_or(0);
        (lowest, highest)
    }
}

/// Resamples parts of frames; keeps its plans and row buffer between calls so that a steady
/// stream of frames of one size allocates nothing.
#[derive(Default)]
pub struct AreaResampler {
    x: AxisTaps,
    y: AxisTaps,
    /// Source rows averaged along x: `[rows, out_width, 3]`.
    rows: Vec<f32>,
}

impl AreaResampler {
    /// Averages `region` of `frame` (in frame pixels; it may reach past the edges) into
    /// `out`: `out_height` rows of `out_width` RGB pixels, `f32` in 0–255, interleaved.
    pub fn resample_rgb(&mut self, frame: &Frame, region: Rect, out_width: usize, out_height: usize, out: &mut [f32]) -> Result<()> {
        let finite = [region.left, region.top, region.width, region.height].iter().all(|v| v.is_finite());
        if !finite || region.width <= 0.0 || region.height <= 0.0 {
            return Err(FerError::Data(format!("cannot resample the region {region:?}: it needs a finite position and a positive size")));
        }
        if out_width == 0 || out_height == 0 || out.len() != out_width * out_height * 3 {
            return Err(FerError::Data(format!(
                "an output of {out_width}x{out_height} RGB pixels needs {} values, got {}",
                out_width * out_height * 3,
                out.len()
            )));
        }
        self.x.plan(region.left as f64, region.width as f64, out_width, frame.width());
        self.y.plan(region.top as f64, region.height as f64, out_height, frame.height());
        let (first_row, last_row) = self.y.source_range();
        let row_len = out_width * 3;
        self.rows.clear();
        self.rows.resize((last_row - first_row + 1) * row_len, 0.0);
        for (y, averaged) in (first_row..=last_row).zip(self.rows.chunks_exact_mut(row_len)) {
            let source = frame.row(y);
            for (x, pixel) in averaged.chunks_exact_mut(3).enumerate() {
                let mut rgb = [0.0f32; 3];
                for tap in self.x.of(x) {
                    let p = &source[tap.index * 4..tap.index * 4 + 3];
                    rgb[0] += tap.weight * p[0] as f32;
                    rgb[1] += tap.weight * p[1] as f32;
                    rgb[2] += tap.weight * p[2] as f32;
                }
                pixel.copy_from_slice(&rgb);
            }
        }
        for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
            out_row.fill(0.0);
            for tap in self.y.of(y) {
                let averaged = &self.rows[(tap.index - first_row) * row_len..][..row_len];
                for (o, &v) in out_row.iter_mut().zip(averaged) {
                    *o += tap.weight * v;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose R, G and B are all `grey(x, y)`.
    fn grey_frame(width: usize, height: usize, grey: impl Fn(usize, usize) -> u8) -> Vec<u8> {
        (0..width * height)
            .flat_map(|i| {
                let g = grey(i % width, i / width);
                [g, g, g, 255]
            })
            .collect()
    }

    fn resample(rgba: &[u8], width: usize, height: usize, region: Rect, out_width: usize, out_height: usize) -> Result<Vec<f32>> {
        let frame = Frame::new(rgba, width, height)?;
        let mut out = vec![0.0; out_width * out_height * 3];
        AreaResampler::default().resample_rgb(&frame, region, out_width, out_height, &mut out)?;
        Ok(out.chunks_exact(3).map(|p| p[0]).collect())
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn halving_averages_each_two_by_two_block() {
        let rgba = grey_frame(4, 4, |x, y| (x * 10 + y * 50) as u8);
        let out = resample(&rgba, 4, 4, Rect::new(0.0, 0.0, 4.0, 4.0), 2, 2).unwrap();
        assert_close(&out, &[30.0, 50.0, 130.0, 150.0]);
    }

    #[test]
    fn partly_covered_pixels_count_by_the_area_covered() {
        // Three pixels into two: each output covers 1.5 pixels.
        let rgba = grey_frame(3, 1, |x, _| [0, 30, 60][x]);
        let out = resample(&rgba, 3, 1, Rect::new(0.0, 0.0, 3.0, 1.0), 2, 1).unwrap();
        assert_close(&out, &[10.0, 50.0]);
        // A region that starts inside a pixel: [0.5, 2.5) into one output.
        let out = resample(&rgba, 3, 1, Rect::new(0.5, 0.0, 2.0, 1.0), 1, 1).unwrap();
        assert_close(&out, &[30.0]);
    }

    #[test]
    fn area_past_the_frame_takes_the_edge_pixel() {
        let rgba = grey_frame(2, 1, |x, _| [10, 20][x]);
        let out = resample(&rgba, 2, 1, Rect::new(-2.0, -5.0, 6.0, 11.0), 3, 1).unwrap();
        assert_close(&out, &[10.0, 15.0, 20.0]);
    }

    #[test]
    fn enlarging_a_uniform_area_keeps_its_value() {
        let rgba = grey_frame(5, 3, |_, _| 77);
        let out = resample(&rgba, 5, 3, Rect::new(1.3, 0.7, 2.1, 1.9), 48, 48).unwrap();
        assert!(out.iter().all(|&v| (v - 77.0).abs() < 1e-3));
    }

    #[test]
    fn bad_regions_and_outputs_are_errors_and_absurd_ones_do_not_panic() {
        let rgba = grey_frame(2, 2, |_, _| 5);
        assert!(resample(&rgba, 2, 2, Rect::new(f32::NAN, 0.0, 1.0, 1.0), 2, 2).is_err());
        assert!(resample(&rgba, 2, 2, Rect::new(0.0, 0.0, 0.0, 1.0), 2, 2).is_err());
        assert!(resample(&rgba, 2, 2, Rect::new(0.0, 0.0, f32::INFINITY, 1.0), 2, 2).is_err());
        assert!(resample(&rgba, 2, 2, Rect::new(0.0, 0.0, 1.0, 1.0), 0, 2).is_err());
        let far = resample(&rgba, 2, 2, Rect::new(-1e30, 1e30, 3e30, 1e-30), 3, 3).unwrap();
        assert!(far.iter().all(|&v| (v - 5.0).abs() < 1e-3));
    }
}

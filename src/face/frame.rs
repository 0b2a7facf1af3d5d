//! A camera frame or photo as JS hands it over: RGBA bytes, row by row, as a canvas'
//! `getImageData` lays them out.

use crate::{FerError, Result};

/// The largest frame side accepted: beyond any camera or sensible photo (photos are scaled
/// down by the page first), and small enough that `width · height · 4` bytes fit wasm memory.
pub const MAX_FRAME_SIDE: usize = 8192;

#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    rgba: &'a [u8],
    width: usize,
    height: usize,
}

impl<'a> Frame<'a> {
    /// Checks that `rgba` holds exactly `width × height` RGBA pixels, 1..=[`MAX_FRAME_SIDE`] each way.
    pub fn new(rgba: &'a [u8], width: usize, height: usize) -> Result<Frame<'a>> {
        check_frame_size(width, height)?;
        if rgba.len() != width * height * 4 {
            return Err(FerError::Data(format!("a {width}x{height} RGBA frame has {} bytes, got {}", width * height * 4, rgba.len())));
        }
        Ok(Frame { rgba, width, height })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Row `y`'s RGBA bytes.
    pub fn row(&self, y: usize) -> &'a [u8] {
        &self.rgba[y * self.width * 4..(y + 1) * self.width * 4]
    }
}

/// Frames must be 1..=[`MAX_FRAME_SIDE`] pixels each way.
pub fn check_frame_size(width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(FerError::Data(format!(
            "a frame of {width}x{height} pixels cannot be searched for faces: each side must be 1 to {MAX_FRAME_SIDE} pixels"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_the_wrong_length_or_size_are_errors() {
        assert!(Frame::new(&[0; 16], 2, 2).is_ok());
        assert!(Frame::new(&[0; 15], 2, 2).unwrap_err().to_string().contains("has 16 bytes, got 15"));
        assert!(Frame::new(&[], 0, 0).is_err());
        assert!(Frame::new(&[], MAX_FRAME_SIDE + 1, 1).is_err());
        assert!(Frame::new(&[], usize::MAX, usize::MAX).is_err());
    }
}

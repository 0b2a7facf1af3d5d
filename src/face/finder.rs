//! Finding faces in video at a fraction of the detector's cost: the whole frame is searched
//! only every few frames; in between, each face of the last frame is searched for in a small
//! window around where it was, at a small detector input (while that costs clearly less than
//! a whole-frame search: for one or two faces at the camera's settings). A face that moves stays in its
//! window from one frame to the next (a window is twice the face's size); a face that newly
//! enters the frame is found at the next whole-frame search; a face lost from its window makes
//! the same frame search the whole frame, so it is not dropped while it is still in view.
//! Figures (faces found and how far the boxes move, against a whole-frame search every frame,
//! which is face-api.js's): `cargo test --release --test face -- --ignored --nocapture following`.

use super::detector::{non_max_suppression, DetectorOptions, TinyFaceDetector};
use super::frame::Frame;
use super::{Detection, Rect};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinderOptions {
    /// How the whole frame is searched.
    pub whole_frame: DetectorOptions,
    /// The whole frame is searched on one frame in this many (1: every frame).
    pub search_every: u32,
    /// How a window around a known face is searched.
    pub window: DetectorOptions,
    /// A window's side over the larger side of the face's last box.
    pub window_per_box: f32,
    /// How a box of a whole-frame search that is no known face is confirmed before it counts.
    pub confirm: Confirmation,
}

/// A second look at a box that a whole-frame search found where no face was known: the
/// detector searches a window around it, at another scale, and the box counts only if that
/// search finds it again. Things that are not faces yet score as faces at one scale (a suit's
/// collar, drawn large) are rarely found at another, while faces are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Confirmation {
    /// How the window is searched.
    pub window: DetectorOptions,
    /// The window's side over the larger side of the box.
    pub window_per_box: f32,
}

/// What the last [`FaceFinder::find`] did: the camera shows it with the stage timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// The detector ran on the whole frame.
    WholeFrame,
    /// The detector ran only in a window around each face of the previous frame.
    Windows,
}

pub struct FaceFinder {
    options: FinderOptions,
    /// The faces of the last frame, best first.
    known: Vec<Detection>,
    frames_since_search: u32,
    in_window: Vec<Detection>,
}

impl FaceFinder {
    pub fn new(options: FinderOptions) -> FaceFinder {
        FaceFinder { options, known: Vec::new(), frames_since_search: 0, in_window: Vec::new() }
    }

    /// The faces of `frame`, the next frame of a video, best first, at most `max_faces`, into
    /// `faces` (cleared first).
    pub fn find(&mut self, detector: &mut TinyFaceDetector, frame: &Frame, max_faces: usize, faces: &mut Vec<Detection>) -> Result<Search> {
        self.frames_since_search += 1;
        let search = if self.known.is_empty() || self.frames_since_search >= self.options.search_every.max(1) || !self.windows_are_cheaper()
        {
            Search::WholeFrame
        } else if self.follow(detector, frame, faces)? {
            Search::Windows
        } else {
            Search::WholeFrame
        };
        if search == Search::WholeFrame {
            detector.detect(frame, &self.options.whole_frame, faces)?;
            confirm_new_faces(detector, frame, &self.known, &self.options.confirm, faces, &mut self.in_window)?;
            self.frames_since_search = 0;
        }
        faces.truncate(max_faces);
        self.known.clear();
        self.known.extend_from_slice(faces);
        Ok(search)
    }

    /// Whether searching a window per known face costs clearly less than searching the whole
    /// frame: the detector's cost grows with its input's area, and each window search also
    /// pays for its own resampling and start, so the windows may take at most two thirds of
    /// the whole frame's area (at the camera's settings: one or two faces, not three).
    fn windows_are_cheaper(&self) -> bool {
        let area = |options: &DetectorOptions| options.input_size * options.input_size;
        3 * self.known.len() * area(&self.options.window) <= 2 * area(&self.options.whole_frame)
    }

    /// Searches a window around each known face; false when one of them is not there.
    fn follow(&mut self, detector: &mut TinyFaceDetector, frame: &Frame, faces: &mut Vec<Detection>) -> Result<bool> {
        faces.clear();
        for known in &self.known {
            let window = window_around(&known.rect, self.options.window_per_box, frame);
            detector.detect_in(frame, window, &self.options.window, &mut self.in_window)?;
            // The window may hold other faces too: this face is the box nearest where it was,
            // if that is less than half its size away.
            let (cx, cy) = known.rect.centre();
            let distance = |d: &Detection| {
                let (x, y) = d.rect.centre();
                ((x - cx) / known.rect.width).abs().max(((y - cy) / known.rect.height).abs())
            };
            let nearest = self.in_window.iter().map(|d| (distance(d), d)).min_by(|a, b| a.0.total_cmp(&b.0));
            match nearest {
                Some((distance, found)) if distance < 0.5 => faces.push(*found),
                _ => return Ok(false),
            }
        }
        // Two faces that came together may now be one.
        non_max_suppression(faces);
        Ok(true)
    }

    /// Forgets the faces (a new video, or a photo): the next frame is searched whole.
    pub fn clear(&mut self) {
        self.known.clear();
        self.frames_since_search = 0;
    }

    /// The faces of `photo`, a frame of its own, best first, into `faces` (cleared first): a
    /// whole-frame search at `options`, each box confirmed as the video's new boxes are.
    pub fn find_in_photo(
        &mut self,
        detector: &mut TinyFaceDetector,
        photo: &Frame,
        options: &DetectorOptions,
        faces: &mut Vec<Detection>,
    ) -> Result<()> {
        self.clear();
        detector.detect(photo, options, faces)?;
        confirm_new_faces(detector, photo, &[], &self.options.confirm, faces, &mut self.in_window)
    }
}

/// Whether `found` is the face `known` was, moved: its centre is less than half `known`'s
/// size from `known`'s centre.
fn continues(known: &Rect, found: &Rect) -> bool {
    let ((cx, cy), (x, y)) = (known.centre(), found.centre());
    ((x - cx) / known.width).abs().max(((y - cy) / known.height).abs()) < 0.5
}

/// Drops from `faces` each box that continues none of `known` and that a search around it (see
/// [`Confirmation`]) does not find again.
fn confirm_new_faces(
    detector: &mut TinyFaceDetector,
    frame: &Frame,
    known: &[Detection],
    confirm: &Confirmation,
    faces: &mut Vec<Detection>,
    in_window: &mut Vec<Detection>,
) -> Result<()> {
    let mut kept = 0;
    for i in 0..faces.len() {
        let candidate = faces[i];
        let confirmed = known.iter().any(|k| continues(&k.rect, &candidate.rect)) || {
            let window = window_around(&candidate.rect, confirm.window_per_box, frame);
            detector.detect_in(frame, window, &confirm.window, in_window)?;
            in_window.iter().any(|d| continues(&candidate.rect, &d.rect))
        };
        if confirmed {
            faces[kept] = candidate;
            kept += 1;
        }
    }
    faces.truncate(kept);
    Ok(())
}

/// A square `side_per_box` times the box's larger side, centred on the box and moved inside
/// the frame along each axis where it fits (else centred on the frame along that axis).
pub fn window_around(rect: &Rect, side_per_box: f32, frame: &Frame) -> Rect {
    let side = rect.width.max(rect.height).max(1.0) * side_per_box;
    let (cx, cy) = rect.centre();
    let place = |centre: f32, frame_side: f32| {
        if side <= frame_side {
            (centre - side / 2.0).clamp(0.0, frame_side - side)
        } else {
            (frame_side - side) / 2.0
        }
    };
    Rect::new(place(cx, frame.width() as f32), place(cy, frame.height() as f32), side, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_centred_on_the_face_and_kept_inside_the_frame() {
        let pixels = vec![0u8; 640 * 480 * 4];
        let frame = Frame::new(&pixels, 640, 480).unwrap();
        assert_eq!(window_around(&Rect::new(200.0, 150.0, 100.0, 80.0), 2.0, &frame), Rect::new(150.0, 90.0, 200.0, 200.0));
        assert_eq!(window_around(&Rect::new(-20.0, 400.0, 100.0, 100.0), 2.0, &frame), Rect::new(0.0, 280.0, 200.0, 200.0));
        // Taller than the frame: centred on it vertically.
        assert_eq!(window_around(&Rect::new(100.0, 0.0, 300.0, 300.0), 2.0, &frame), Rect::new(0.0, -60.0, 600.0, 600.0));
    }
}

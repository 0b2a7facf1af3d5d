//! Smooths each face's probabilities over video frames, so that labels and bars do not flicker
//! from one frame to the next. Faces are followed from frame to frame by how much their crops
//! overlap, so two faces never mix their histories.

use super::Rect;
use crate::data::NUM_CLASSES;

/// How much of the previous frame's smoothed probabilities each frame keeps: at 30 frames/s a
/// change shows half within about two frames (70 ms): steady, yet still live.
pub const HISTORY_WEIGHT: f32 = 0.6;
/// Crops overlapping at least this much (intersection over union) are the same face.
const SAME_FACE_IOU: f32 = 0.3;

#[derive(Clone, Copy)]
struct Track {
    square: Rect,
    probs: [f32; NUM_CLASSES],
}

#[derive(Default)]
pub struct FaceTracks {
    tracks: Vec<Track>,
    previous: Vec<Track>,
}

impl FaceTracks {
    /// Replaces the probabilities of each face (`probs`: `NUM_CLASSES` per face of `squares`)
    /// by a running average over the frames in which that face was seen; a face that overlaps
    /// none of the previous frame's faces starts afresh. Faces not seen in this frame are
    /// forgotten.
    pub fn smooth(&mut self, squares: &[Rect], probs: &mut [f32]) {
        std::mem::swap(&mut self.tracks, &mut self.previous);
        self.tracks.clear();
        for (square, face_probs) in squares.iter().zip(probs.chunks_exact_mut(NUM_CLASSES)) {
            let best = self
                .previous
                .iter()
                .enumerate()
                .map(|(i, track)| (i, track.square.iou(square)))
                .filter(|&(_, iou)| iou >= SAME_FACE_IOU)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, _)) = best {
                // Each previous face continues at most one face of this frame.
                let history = self.previous.swap_remove(i).probs;
                for (p, h) in face_probs.iter_mut().zip(history) {
                    *p = HISTORY_WEIGHT * h + (1.0 - HISTORY_WEIGHT) * *p;
                }
            }
            let mut kept = [0.0; NUM_CLASSES];
            kept.copy_from_slice(face_probs);
            self.tracks.push(Track { square: *square, probs: kept });
        }
    }

    /// Forgets every face (a new video, or a photo).
    pub fn clear(&mut self) {
        self.tracks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(class: usize) -> [f32; NUM_CLASSES] {
        let mut probs = [0.0; NUM_CLASSES];
        probs[class] = 1.0;
        probs
    }

    #[test]
    fn a_face_that_stays_is_averaged_and_a_new_face_starts_afresh() {
        let mut tracks = FaceTracks::default();
        let here = Rect::new(0.0, 0.0, 100.0, 100.0);
        let mut probs = one_hot(3);
        tracks.smooth(&[here], &mut probs);
        assert_eq!(probs, one_hot(3));

        let moved_a_little = Rect::new(10.0, 5.0, 100.0, 100.0);
        let mut probs = one_hot(0);
        tracks.smooth(&[moved_a_little], &mut probs);
        assert!((probs[3] - HISTORY_WEIGHT).abs() < 1e-6 && (probs[0] - (1.0 - HISTORY_WEIGHT)).abs() < 1e-6);

        let elsewhere = Rect::new(400.0, 0.0, 100.0, 100.0);
        let mut probs = one_hot(5);
        tracks.smooth(&[elsewhere], &mut probs);
        assert_eq!(probs, one_hot(5));
    }

    #[test]
    fn two_faces_keep_their_own_histories_whatever_their_order() {
        let mut tracks = FaceTracks::default();
        let (left, right) = (Rect::new(0.0, 0.0, 100.0, 100.0), Rect::new(300.0, 0.0, 100.0, 100.0));
        let mut probs = [one_hot(1), one_hot(2)].concat();
        tracks.smooth(&[left, right], &mut probs);
        let mut probs = [one_hot(2), one_hot(1)].concat();
        tracks.smooth(&[right, left], &mut probs);
        assert_eq!(probs, [one_hot(2), one_hot(1)].concat());

        tracks.clear();
        let mut probs = one_hot(6);
        tracks.smooth(&[left], &mut probs);
        assert_eq!(probs, one_hot(6));
    }
}

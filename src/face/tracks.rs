//! Smooths each face's probabilities over video frames, so that labels and bars do not flicker
//! from one frame to the next; holds each face's label until another expression clearly leads
//! (hysteresis), and counts the consecutive frames a face has been seen, so that a box is shown
//! only for a face seen in a few frames in a row (a detector's one-frame false find never is).
//! Faces are followed from frame to frame by how much their crops overlap, so two faces never
//! mix their histories; each face keeps the id it was given when first seen, so an app can tell
//! its faces apart across frames.

use ndarray::ArrayView1;

use super::Rect;
use crate::data::NUM_CLASSES;
use crate::inference::argmax;

/// How much of the previous frame's smoothed probabilities each frame keeps: at 30 frames/s a
/// change shows half within about two frames (70 ms): steady, yet still live.
pub const HISTORY_WEIGHT: f32 = 0.6;
/// A face's label changes only when another expression's smoothed probability exceeds the
/// label's by this much. A full change of expression still shows in two frames, as without it
/// (the smoothing's own delay); a near tie no longer flips the label back and forth.
pub const LABEL_MARGIN: f32 = 0.15;
/// A face is shown once seen in this many consecutive frames: two frames (about 70 ms at
/// 30 frames/s) later than it is found.
pub const SHOW_AFTER_FRAMES: u32 = 3;
/// Crops overlapping at least this much (intersection over union) are the same face.
const SAME_FACE_IOU: f32 = 0.3;

#[derive(Clone, Copy)]
struct Track {
    id: u32,
    square: Rect,
    probs: [f32; NUM_CLASSES],
    label: usize,
    frames_seen: u32,
}

/// What the tracks say of one face of the latest frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Steadiness {
    /// The face's id: the same in every frame while the face is followed, never reused.
    pub id: u32,
    /// The expression shown: the leading one, held until another clearly leads.
    pub label: usize,
    /// Consecutive frames this face has been seen in, this one included.
    pub frames_seen: u32,
}

impl Steadiness {
    /// Whether the face has been seen long enough to show.
    pub fn is_shown(&self) -> bool {
        self.frames_seen >= SHOW_AFTER_FRAMES
    }
}

#[derive(Default)]
pub struct FaceTracks {
    tracks: Vec<Track>,
    previous: Vec<Track>,
    last_id: u32,
}

impl FaceTracks {
    /// Replaces the probabilities of each face (`probs`: `NUM_CLASSES` per face of `squares`)
    /// by a running average over the frames in which that face was seen, and returns each
    /// face's held label and frame count in `steadiness`; a face that overlaps none of the
    /// previous frame's faces starts afresh. Faces not seen in this frame are forgotten.
    pub fn smooth(&mut self, squares: &[Rect], probs: &mut [f32], steadiness: &mut [Steadiness]) {
        std::mem::swap(&mut self.tracks, &mut self.previous);
        self.tracks.clear();
        for ((square, face_probs), steady) in squares.iter().zip(probs.chunks_exact_mut(NUM_CLASSES)).zip(steadiness) {
            let best = self
                .previous
                .iter()
                .enumerate()
                .map(|(i, track)| (i, track.square.iou(square)))
                .filter(|&(_, iou)| iou >= SAME_FACE_IOU)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let leader = |p: &[f32]| argmax(ArrayView1::from(p));
            let (id, label, frames_seen) = match best {
                Some((i, _)) => {
                    // Each previous face continues at most one face of this frame.
                    let history = self.previous.swap_remove(i);
                    for (p, h) in face_probs.iter_mut().zip(history.probs) {
                        *p = HISTORY_WEIGHT * h + (1.0 - HISTORY_WEIGHT) * *p;
                    }
                    let leading = leader(face_probs);
                    let label = if face_probs[leading] > face_probs[history.label] + LABEL_MARGIN { leading } else { history.label };
                    (history.id, label, history.frames_seen.saturating_add(1))
                }
                None => (self.new_id(), leader(face_probs), 1),
            };
            let mut kept = [0.0; NUM_CLASSES];
            kept.copy_from_slice(face_probs);
            self.tracks.push(Track { id, square: *square, probs: kept, label, frames_seen });
            *steady = Steadiness { id, label, frames_seen };
        }
    }

    /// Forgets every face (a new video, or a photo); ids are not reused.
    pub fn clear(&mut self) {
        self.tracks.clear();
    }

    /// An id no face has had yet (ids start at 1).
    pub fn new_id(&mut self) -> u32 {
        self.last_id = self.last_id.wrapping_add(1).max(1);
        self.last_id
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
        tracks.smooth(&[here], &mut probs, &mut [Steadiness::default()]);
        assert_eq!(probs, one_hot(3));

        let moved_a_little = Rect::new(10.0, 5.0, 100.0, 100.0);
        let mut probs = one_hot(0);
        tracks.smooth(&[moved_a_little], &mut probs, &mut [Steadiness::default()]);
        assert!((probs[3] - HISTORY_WEIGHT).abs() < 1e-6 && (probs[0] - (1.0 - HISTORY_WEIGHT)).abs() < 1e-6);

        let elsewhere = Rect::new(400.0, 0.0, 100.0, 100.0);
        let mut probs = one_hot(5);
        tracks.smooth(&[elsewhere], &mut probs, &mut [Steadiness::default()]);
        assert_eq!(probs, one_hot(5));
    }

    #[test]
    fn two_faces_keep_their_own_histories_whatever_their_order() {
        let mut tracks = FaceTracks::default();
        let (left, right) = (Rect::new(0.0, 0.0, 100.0, 100.0), Rect::new(300.0, 0.0, 100.0, 100.0));
        let mut probs = [one_hot(1), one_hot(2)].concat();
        tracks.smooth(&[left, right], &mut probs, &mut [Steadiness::default(); 2]);
        let mut probs = [one_hot(2), one_hot(1)].concat();
        tracks.smooth(&[right, left], &mut probs, &mut [Steadiness::default(); 2]);
        assert_eq!(probs, [one_hot(2), one_hot(1)].concat());

        tracks.clear();
        let mut probs = one_hot(6);
        tracks.smooth(&[left], &mut probs, &mut [Steadiness::default()]);
        assert_eq!(probs, one_hot(6));
    }

    #[test]
    fn the_label_holds_through_a_near_tie_and_follows_a_clear_change() {
        let mut tracks = FaceTracks::default();
        let here = Rect::new(0.0, 0.0, 100.0, 100.0);
        let mut steady = [Steadiness::default()];
        let mut frame = |probs: [f32; NUM_CLASSES]| {
            let mut probs = probs;
            tracks.smooth(&[here], &mut probs, &mut steady);
            steady[0]
        };
        let happy_leads = [0.0, 0.0, 0.0, 0.55, 0.0, 0.0, 0.45];
        let neutral_leads_a_little = [0.0, 0.0, 0.0, 0.45, 0.0, 0.0, 0.55];
        let first = frame(happy_leads);
        assert_eq!((first.label, first.frames_seen), (3, 1));
        assert!(!first.is_shown());
        for _ in 0..20 {
            assert_eq!(frame(neutral_leads_a_little).label, 3, "a 10-point lead must not flip the label");
        }
        assert_eq!(frame(one_hot(5)).label, 3, "one frame of surprise is not yet a clear change");
        let after = frame(one_hot(5));
        assert_eq!(after.label, 5, "a full change of expression shows in two frames");
        assert!(after.frames_seen >= SHOW_AFTER_FRAMES && after.is_shown());
        assert_eq!(after.id, first.id, "a followed face keeps its id");
    }

    #[test]
    fn each_face_keeps_its_id_and_a_new_face_gets_a_new_one() {
        let mut tracks = FaceTracks::default();
        let (left, right) = (Rect::new(0.0, 0.0, 100.0, 100.0), Rect::new(300.0, 0.0, 100.0, 100.0));
        let mut steady = [Steadiness::default(); 2];
        tracks.smooth(&[left, right], &mut [one_hot(1), one_hot(2)].concat(), &mut steady);
        let (left_id, right_id) = (steady[0].id, steady[1].id);
        assert_ne!(left_id, right_id);
        tracks.smooth(&[right, left], &mut [one_hot(2), one_hot(1)].concat(), &mut steady);
        assert_eq!((steady[0].id, steady[1].id), (right_id, left_id), "ids follow the faces, not their order");
        let elsewhere = Rect::new(150.0, 300.0, 100.0, 100.0);
        tracks.smooth(&[elsewhere], &mut one_hot(0), &mut steady[..1]);
        assert!(![left_id, right_id].contains(&steady[0].id), "a face not seen before gets a fresh id");
        tracks.clear();
        tracks.smooth(&[left], &mut one_hot(1), &mut steady[..1]);
        assert!(![left_id, right_id].contains(&steady[0].id), "ids are never reused");
    }
}

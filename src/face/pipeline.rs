//! One frame through the whole chain: find the faces, crop each the FER2013 way, classify the
//! crops, smooth the probabilities per face over video frames. Results stay in fixed buffers
//! (at most [`MAX_FACES`] faces) that the wasm API lends to JS as typed-array views.

use super::crop::{crop_face, fer_square};
use super::detector::{DetectorOptions, TinyFaceDetector};
use super::finder::{Confirmation, FaceFinder, FinderOptions, Search};
use super::frame::Frame;
use super::resample::AreaResampler;
use super::tracks::{FaceTracks, Steadiness};
use super::{Detection, Rect};
use crate::data::{FACE_PIXELS, FACE_SIDE, NUM_CLASSES};
use crate::engine::parallel::on_pool;
use crate::engine::Network;
use crate::inference::{argmax, predict_faces, Tta};
use crate::{FerError, Result};
use ndarray::ArrayView1;

/// Faces classified per frame, the best-scored first.
pub const MAX_FACES: usize = 4;

/// A face found in a frame: the detector's box and score, the square cropped from it, and
/// what the tracks say of it (video; a photo's faces are shown at once with their leading
/// expression). `#[repr(C)]`, 12 `f32`s: JS reads them as a `Float32Array`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct FoundFace {
    pub detection: Detection,
    pub crop: Rect,
    /// The expression to show (an index, held through near ties).
    pub label: f32,
    /// 1 once the face has been seen in enough consecutive frames to be shown, else 0.
    pub shown: f32,
    /// The face's id: the same while a video's face is followed from frame to frame, never
    /// reused (an `f32`, exact up to 2^24 faces).
    pub id: f32,
}

/// Milliseconds each stage of the last frame took, and how the faces were found, since a
/// whole-frame search costs several times a search around known faces. `#[repr(C)]`: 4 `f32`s
/// for JS.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct StageTimings {
    pub find_ms: f32,
    pub crop_ms: f32,
    pub classify_ms: f32,
    /// 1 when the detector searched the whole frame (always for a photo), 0 when it searched
    /// only around the faces of the previous frame (see `face::finder`).
    pub whole_frame: f32,
}

/// Video frames come one after another from one camera: found quickly at a small detector
/// input, probabilities smoothed over time. A photo stands alone and may hold small faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Video,
    Photo,
}

impl FrameKind {
    /// Video at input 224: in 640x480 frames it finds faces from about 130 px wide (FER2013
    /// faces: 44% at 128 px, 79% at 192 px; 160 finds only faces over ~190 px) in ~11 ms of
    /// wasm; a video's frames are searched whole only every few frames ([`VIDEO_FINDER`]).
    /// Photos (scaled to at most 1280 px) at 416, for smaller faces at ~45 ms. The score
    /// threshold is face-api.js's default; in 8,400 test frames it boxed nothing but the face.
    /// Figures: `cargo test --release --test face -- --ignored --nocapture fer_faces`.
    pub fn detector_options(self) -> DetectorOptions {
        match self {
            FrameKind::Video => VIDEO_FINDER.whole_frame,
            FrameKind::Photo => DetectorOptions { input_size: 416, min_score: 0.5 },
        }
    }
}

/// How video frames are searched: the whole frame at [`FrameKind::Video`]'s options on one
/// frame in four (a face entering the frame is found within four frames, 130 ms at 30
/// frames/s); in between each known face in a window twice its size at input 128, where the
/// face is about 55 px, a size the detector finds well, for about a third of a whole-frame
/// search. A window takes a lower score (0.3) than the whole frame, since it holds a face that
/// was just seen there: moving FER2013 faces are then found in more frames than by a
/// whole-frame search on every frame, with no boxes off the face, and windows lose a face,
/// which costs a whole-frame search in that frame too, half as often as at 0.5. Figures:
/// `cargo test --release --test face -- --ignored --nocapture following`.
pub const VIDEO_FINDER: FinderOptions = FinderOptions {
    whole_frame: DetectorOptions { input_size: 224, min_score: 0.5 },
    search_every: 4,
    window: DetectorOptions { input_size: 128, min_score: 0.3 },
    window_per_box: 2.0,
    confirm: CONFIRM_NEW_FACES,
};

/// A box that no known face explains (every box of a photo) counts only if a search in a
/// window twice its size at input 160 finds it again with a score of at least 0.3: the window
/// sees the box at about 80 px, where the whole frame at 224 saw it at 35% of its size and a
/// photo at 416 at 65%. On 14 face-free photos and the astronaut photo drawn into 640x480 this
/// removes every box off a face (the astronaut's collar, drawn letterboxed, scored 0.70 at 224
/// and under 0.2 in its window); of FER2013 faces of 192–320 px that a whole-frame search at 224
/// finds it keeps 88–97% (a video tries a face it missed again at the next whole-frame search).
/// Figures: `cargo test --release --test face -- --ignored --nocapture boxes_without_faces`.
pub const CONFIRM_NEW_FACES: Confirmation =
    Confirmation { window: DetectorOptions { input_size: 160, min_score: 0.3 }, window_per_box: 2.0 };

pub struct FacePipeline {
    detector: TinyFaceDetector,
    finder: FaceFinder,
    resampler: AreaResampler,
    tracks: FaceTracks,
    detections: Vec<Detection>,
    faces: [FoundFace; MAX_FACES],
    crops: [[u8; FACE_PIXELS]; MAX_FACES],
    probs: [[f32; NUM_CLASSES]; MAX_FACES],
    face_count: usize,
    timings: StageTimings,
    tta: Tta,
}

impl FacePipeline {
    pub fn new(detector: TinyFaceDetector) -> FacePipeline {
        FacePipeline {
            detector,
            finder: FaceFinder::new(VIDEO_FINDER),
            resampler: AreaResampler::default(),
            tracks: FaceTracks::default(),
            detections: Vec::new(),
            faces: [FoundFace::default(); MAX_FACES],
            crops: [[0; FACE_PIXELS]; MAX_FACES],
            probs: [[0.0; NUM_CLASSES]; MAX_FACES],
            face_count: 0,
            timings: StageTimings::default(),
            tta: Tta::None,
        }
    }

    /// Classifies each face over these test-time views from the next frame on: `Tta::Flip`
    /// averages the face and its mirror image, for twice the classify time.
    pub fn set_tta(&mut self, tta: Tta) {
        self.tta = tta;
    }

    pub fn tta(&self) -> Tta {
        self.tta
    }

    /// Forgets the faces of earlier video frames: the next frame starts a new video, its faces
    /// searched for in the whole frame and given new ids.
    pub fn forget(&mut self) {
        self.finder.clear();
        self.tracks.clear();
    }

    /// Finds, crops and classifies the faces of `frame` with `classifier` (a 48x48x1 model);
    /// returns how many faces (0 to [`MAX_FACES`]). `now_ms` reads a clock in milliseconds
    /// (`performance.now()` in the browser) to time each stage. Runs on the thread pool, where
    /// there is one (see `parallel::on_pool`).
    pub fn run(&mut self, frame: &Frame, kind: FrameKind, classifier: &mut Network, now_ms: impl Fn() -> f64 + Send) -> Result<usize> {
        on_pool(|| self.run_here(frame, kind, classifier, now_ms))
    }

    fn run_here(&mut self, frame: &Frame, kind: FrameKind, classifier: &mut Network, now_ms: impl Fn() -> f64) -> Result<usize> {
        let input = classifier.spec().input;
        if input != [1, FACE_SIDE, FACE_SIDE] {
            return Err(FerError::Model(format!("this model takes {input:?} inputs; faces from the camera are 48x48 grey ([1, 48, 48])")));
        }
        self.face_count = 0;
        let started = now_ms();
        let search = match kind {
            FrameKind::Video => self.finder.find(&mut self.detector, frame, MAX_FACES, &mut self.detections)?,
            FrameKind::Photo => {
                self.finder.find_in_photo(&mut self.detector, frame, &kind.detector_options(), &mut self.detections)?;
                Search::WholeFrame
            }
        };
        let found = now_ms();
        let count = self.detections.len().min(MAX_FACES);
        for ((detection, face), crop) in self.detections.iter().zip(&mut self.faces).zip(&mut self.crops).take(count) {
            *face = FoundFace { detection: *detection, crop: fer_square(&detection.rect), ..FoundFace::default() };
            crop_face(frame, face.crop, &mut self.resampler, crop)?;
        }
        let cropped = now_ms();
        if count > 0 {
            let probs = predict_faces(classifier, self.crops[..count].as_flattened(), self.tta);
            for (out, row) in self.probs.iter_mut().zip(probs.rows()) {
                for (o, &p) in out.iter_mut().zip(row) {
                    *o = p;
                }
            }
        }
        let classified = now_ms();
        match kind {
            FrameKind::Video => {
                let mut squares = [Rect::default(); MAX_FACES];
                for (square, face) in squares.iter_mut().zip(&self.faces[..count]) {
                    *square = face.crop;
                }
                let mut steadiness = [Steadiness::default(); MAX_FACES];
                self.tracks.smooth(&squares[..count], self.probs[..count].as_flattened_mut(), &mut steadiness[..count]);
                for (face, steady) in self.faces.iter_mut().zip(steadiness).take(count) {
                    face.id = steady.id as f32;
                    face.label = steady.label as f32;
                    face.shown = if steady.is_shown() { 1.0 } else { 0.0 };
                }
            }
            FrameKind::Photo => {
                self.tracks.clear();
                for (face, probs) in self.faces.iter_mut().zip(&self.probs).take(count) {
                    face.id = self.tracks.new_id() as f32;
                    face.label = argmax(ArrayView1::from(probs)) as f32;
                    face.shown = 1.0;
                }
            }
        }
        self.face_count = count;
        self.timings = StageTimings {
            find_ms: (found - started) as f32,
            crop_ms: (cropped - found) as f32,
            classify_ms: (classified - cropped) as f32,
            whole_frame: if search == Search::WholeFrame { 1.0 } else { 0.0 },
        };
        Ok(count)
    }

    /// The faces of the last frame, best first.
    pub fn faces(&self) -> &[FoundFace] {
        &self.faces[..self.face_count]
    }

    /// The 48x48 grey crops the classifier saw, one per face.
    pub fn crops(&self) -> &[[u8; FACE_PIXELS]] {
        &self.crops[..self.face_count]
    }

    /// Seven probabilities per face (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral),
    /// smoothed over time for video.
    pub fn probs(&self) -> &[[f32; NUM_CLASSES]] {
        &self.probs[..self.face_count]
    }

    pub fn timings(&self) -> &StageTimings {
        &self.timings
    }
}

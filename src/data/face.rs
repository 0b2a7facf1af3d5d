//! What a face is to every model here: a 48x48 grey square, and one of seven expressions.

/// Width and height of a face, in pixels.
pub const FACE_SIDE: usize = 48;
/// Pixels in one face.
pub const FACE_PIXELS: usize = FACE_SIDE * FACE_SIDE;
/// Number of emotion classes.
pub const NUM_CLASSES: usize = 7;
/// Emotion names, indexed by label.
pub const EMOTIONS: [&str; NUM_CLASSES] = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"];

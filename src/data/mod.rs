//! Getting data in: what a face is, the dataset that holds them, the FER2013 CSV reader that
//! fills it, and the pixels-to-inputs step (with training augmentation).

pub mod dataset;
pub mod face;
pub mod fer2013;
pub mod input;

pub use dataset::{spread_evenly, Dataset, Usage};
pub use face::{EMOTIONS, FACE_PIXELS, FACE_SIDE, NUM_CLASSES};
#[cfg(not(target_arch = "wasm32"))]
pub use fer2013::read_fer2013_path;
pub use fer2013::{BadRow, Fer2013Parser, ParseReport, Parsed, MAX_LINE_BYTES, MAX_REPORTED_BAD_ROWS};

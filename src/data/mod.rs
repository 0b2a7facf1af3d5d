//! Getting data in: the FER2013 CSV reader and the dataset it fills.

pub mod fer2013;
pub mod input;

#[cfg(not(target_arch = "wasm32"))]
pub use fer2013::read_fer2013_path;
pub use fer2013::{
    BadRow, Dataset, Fer2013Parser, ParseReport, Parsed, Usage, EMOTIONS, FACE_PIXELS, FACE_SIDE, MAX_LINE_BYTES, MAX_REPORTED_BAD_ROWS,
    NUM_CLASSES,
};

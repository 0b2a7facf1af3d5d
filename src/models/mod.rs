//! Model presets (architectures as data), the model file format and its metadata, and the
//! ways to make one model from others (grow, merge, average).

pub mod average;
pub mod file;
pub mod grow;
pub mod merge;
pub mod metadata;
pub mod onnx;
pub mod presets;

pub use average::average;
pub use file::{as_stored, load_model, save_model, with_metadata, LoadedModel, StoredDtype};
pub use grow::deepen;
pub use merge::merge;
pub use metadata::ModelMetadata;
pub use onnx::{export_onnx, import_onnx, load_any_model};
pub use presets::{preset, PRESETS};

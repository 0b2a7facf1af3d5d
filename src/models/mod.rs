//! Model presets (architectures as data) and the model file format.

pub mod average;
pub mod file;
pub mod grow;
pub mod merge;
pub mod presets;

pub use average::average;
pub use file::{load_model, save_model, LoadedModel, StoredDtype};
pub use grow::deepen;
pub use merge::merge;
pub use presets::{preset, PRESETS};

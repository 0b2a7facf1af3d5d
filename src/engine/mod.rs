//! The CNN engine: NCHW `f32` tensors on `ndarray`, layers with forward and backward passes,
//! the softmax cross-entropy loss, optimisers and learning-rate schedules, and a sequential
//! network assembled from a list of layer specs.

pub mod direct;
pub mod int8;
pub mod layers;
pub mod loss;
pub mod network;
pub mod optim;
pub mod parallel;
pub mod personal;
pub mod tensor;

pub use layers::{Layer, LayerSpec, Mode, Padding, Param};
pub use network::{ModelSpec, Network};
pub use optim::{LrSchedule, Optimizer, OptimizerKind};
pub use tensor::{Rng, Tensor};

//! PyTorch's answers (reference/torch/known_answers.py, computed in float64) for two networks
//! from fixed weights and a fixed batch, and the engine's own, compared: the forward pass in
//! training and evaluation mode, the loss with label smoothing, every parameter's gradient, and
//! three steps of each optimiser with the batch-norm running statistics they leave. Shared by the
//! native test (tests/known_answers.rs) and the browser test (tests/web.rs), which include this
//! file by path.

#![allow(dead_code)] // each test crate uses a different part

use fer_cnn::data::input::normalize_pixel;
use fer_cnn::data::NUM_CLASSES;
use fer_cnn::engine::loss::{smoothed_one_hot, softmax_cross_entropy};
use fer_cnn::engine::network::batch_tensor;
use fer_cnn::engine::{Mode, ModelSpec, Network, Optimizer, OptimizerKind, Rng, Tensor};
use rand::SeedableRng;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

pub const SEED: &[u8] = include_bytes!("../fixtures/known_answers/seed.safetensors");
pub const BATCH_NORM: &[u8] = include_bytes!("../fixtures/known_answers/batch_norm.safetensors");
pub const PRESETS: &str = include_str!("../fixtures/known_answers/presets.json");
/// Model files written by reference/torch/fer_torch.py: (fixture, optimiser, file), the network
/// after that optimiser's steps as f32 or int8.
pub const TORCH_MODEL_FILES: [(&str, &[u8], &str, &[u8]); 4] = [
    ("seed", SEED, "adamw", include_bytes!("../fixtures/known_answers/seed_adamw_f32.safetensors")),
    ("seed", SEED, "sgd", include_bytes!("../fixtures/known_answers/seed_sgd_int8.safetensors")),
    ("batch_norm", BATCH_NORM, "adamw", include_bytes!("../fixtures/known_answers/batch_norm_adamw_f32.safetensors")),
    ("batch_norm", BATCH_NORM, "sgd", include_bytes!("../fixtures/known_answers/batch_norm_sgd_int8.safetensors")),
];

/// How far the engine (float32) may be from PyTorch's float64 answers, as the largest
/// difference in a tensor over the largest magnitude of PyTorch's tensor. For the optimiser
/// steps the tensors compared are the displacements from the initial values, so the tolerance
/// bounds the error of the update itself, not of the (much larger) weights.
#[derive(Clone, Copy, Debug)]
pub struct Tolerances {
    pub logits: f64,
    pub loss: f64,
    pub gradients: f64,
    pub steps: f64,
}

/// About 7 times the largest errors seen, natively (x86-64) and in Firefox: logits 7.3e-6, loss
/// 4.3e-7, gradients 3.8e-6, optimiser steps 3.4e-5.
pub const TOLERANCES: Tolerances = Tolerances { logits: 5e-5, loss: 5e-6, gradients: 3e-5, steps: 2e-4 };

/// The largest relative error found in each part of one fixture, with where.
#[derive(Clone, Debug, Default)]
pub struct Errors {
    pub logits: (f64, String),
    pub loss: (f64, String),
    pub gradients: (f64, String),
    pub steps: (f64, String),
}

impl Errors {
    fn note(slot: &mut (f64, String), error: f64, what: &str) {
        // NaN counts as the worst error.
        if error.is_nan() || error > slot.0 || slot.1.is_empty() {
            *slot = (if error.is_nan() { f64::INFINITY } else { error }, what.to_string());
        }
    }

    /// Each part over its tolerance, as a line naming the tensor; empty when all hold.
    pub fn over(&self, tolerances: &Tolerances) -> Vec<String> {
        [
            ("logits", &self.logits, tolerances.logits),
            ("loss", &self.loss, tolerances.loss),
            ("gradients", &self.gradients, tolerances.gradients),
            ("optimiser steps", &self.steps, tolerances.steps),
        ]
        .into_iter()
        .filter(|(_, (error, _), tolerance)| !(*error <= *tolerance))
        .map(|(part, (error, what), tolerance)| format!("{part}: {what} off by {error:.2e} (tolerance {tolerance:.0e})"))
        .collect()
    }
}

struct Fixture<'a> {
    tensors: SafeTensors<'a>,
    spec: ModelSpec,
    label_smoothing: f32,
    optimizers: Vec<(String, OptimizerKind, f32, f32)>,
}

impl<'a> Fixture<'a> {
    fn read(bytes: &'a [u8]) -> Fixture<'a> {
        let (_, header) = SafeTensors::read_metadata(bytes).expect("a safetensors fixture");
        let metadata = header.metadata().clone().expect("the fixture has metadata");
        let spec = serde_json::from_str(&metadata["spec"]).expect("the fixture's spec is a ModelSpec");
        let label_smoothing = metadata["label_smoothing"].parse().expect("a number");
        let configs: Vec<serde_json::Value> = serde_json::from_str(&metadata["optimizers"]).expect("a JSON list");
        let optimizers = configs
            .iter()
            .map(|c| {
                let number = |key: &str| c[key].as_f64().unwrap_or_else(|| panic!("optimiser {c}: no {key}")) as f32;
                let name = c["name"].as_str().expect("a name").to_string();
                let kind = match name.as_str() {
                    "sgd" => OptimizerKind::Sgd { momentum: number("momentum"), nesterov: true },
                    "adam" => OptimizerKind::Adam { beta1: number("beta1"), beta2: number("beta2"), epsilon: number("epsilon") },
                    "adamw" => OptimizerKind::AdamW { beta1: number("beta1"), beta2: number("beta2"), epsilon: number("epsilon") },
                    other => panic!("unknown optimiser {other}"),
                };
                (name, kind, number("lr"), number("weight_decay"))
            })
            .collect();
        let tensors = SafeTensors::deserialize(bytes).expect("a readable fixture");
        Fixture { tensors, spec, label_smoothing, optimizers }
    }

    fn values(&self, name: &str) -> Vec<f32> {
        let view = self.tensors.tensor(name).unwrap_or_else(|_| panic!("the fixture has no '{name}'"));
        match view.dtype() {
            Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::U8 => view.data().iter().map(|&b| b as f32).collect(),
            other => panic!("'{name}' is {other:?}"),
        }
    }

    /// The network with every tensor (parameters and running statistics) from `{prefix}.*`:
    /// `initial`, or an optimiser's name for the tensors after its steps.
    fn network(&self, prefix: &str) -> Network {
        let mut network = Network::new(self.spec.clone(), 0).expect("the fixture's spec builds");
        for (name, tensor) in network.named_tensors_mut() {
            let values = self.values(&format!("{prefix}.{name}"));
            *tensor = Tensor::from_shape_vec(tensor.raw_dim(), values).expect("the fixture's shape");
        }
        network
    }

    fn input(&self) -> Tensor {
        let values = self.values("pixels").into_iter().map(normalize_pixel).collect();
        batch_tensor(self.spec.input, values).expect("whole faces")
    }

    fn labels(&self) -> Vec<u8> {
        self.values("labels").into_iter().map(|l| l as u8).collect()
    }

    /// A training-mode forward pass, the loss and the backward pass: (logits, loss).
    fn train_pass(&self, network: &mut Network) -> (Vec<f32>, f32) {
        let logits = network.forward(self.input(), &mut Mode::Train(&mut Rng::seed_from_u64(0)));
        let targets = smoothed_one_hot(&self.labels(), NUM_CLASSES, self.label_smoothing);
        let out = softmax_cross_entropy(logits.view(), targets.view(), None);
        network.zero_grad();
        network.backward(out.grad_logits);
        (logits.iter().copied().collect(), out.loss)
    }

    fn eval_logits(&self, network: &mut Network) -> Vec<f32> {
        network.forward(self.input(), &mut Mode::Eval).iter().copied().collect()
    }
}

/// max |got − want| / max |want| (at least `floor`), in float64.
fn relative_error(got: &[f32], want: &[f32], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(floor, |m, &w| m.max((w as f64).abs()));
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs()).fold(0.0, |m: f64, d| if d.is_nan() { f64::NAN } else { m.max(d) })
        / scale
}

/// The names of the trainable tensors, in `Network::params` order: every saved tensor but the
/// batch-norm running statistics.
fn parameter_names(network: &Network) -> Vec<String> {
    network
        .named_tensors()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| !n.ends_with(".running_mean") && !n.ends_with(".running_var"))
        .collect()
}

/// Runs everything the fixture holds answers for and returns the errors.
pub fn measure(bytes: &[u8]) -> Errors {
    let fixture = Fixture::read(bytes);
    let mut errors = Errors::default();

    let mut network = fixture.network("initial");
    let (logits, loss) = fixture.train_pass(&mut network);
    Errors::note(&mut errors.logits, relative_error(&logits, &fixture.values("logits"), 1e-6), "training-mode logits");
    Errors::note(&mut errors.loss, relative_error(&[loss], &fixture.values("loss"), 1e-6), "loss");
    for (name, param) in parameter_names(&network).iter().zip(network.params()) {
        let grad: Vec<f32> = param.grad.iter().copied().collect();
        // Floor: gradients of 1e-9 (a dead unit's float noise) are zero for this purpose.
        Errors::note(&mut errors.gradients, relative_error(&grad, &fixture.values(&format!("grad.{name}")), 1e-6), name);
    }
    let eval = fixture.eval_logits(&mut network);
    Errors::note(&mut errors.logits, relative_error(&eval, &fixture.values("logits_eval"), 1e-6), "evaluation-mode logits");

    for (optimizer_name, kind, lr, weight_decay) in &fixture.optimizers {
        let mut network = fixture.network("initial");
        let mut optimizer = Optimizer::new(*kind, *weight_decay);
        let mut losses = Vec::new();
        for _ in 0..3 {
            let (_, loss) = fixture.train_pass(&mut network);
            losses.push(loss);
            optimizer.step(&mut network.params_mut(), *lr);
        }
        let want_losses = fixture.values(&format!("{optimizer_name}.losses"));
        Errors::note(&mut errors.loss, relative_error(&losses, &want_losses, 1e-6), &format!("{optimizer_name}: losses of the 3 steps"));
        let eval = fixture.eval_logits(&mut network);
        let want_eval = fixture.values(&format!("{optimizer_name}.logits_eval"));
        Errors::note(
            &mut errors.logits,
            relative_error(&eval, &want_eval, 1e-6),
            &format!("{optimizer_name}: evaluation-mode logits after"),
        );
        for (name, tensor) in network.named_tensors() {
            let initial = fixture.values(&format!("initial.{name}"));
            let moved: Vec<f32> = tensor.iter().zip(&initial).map(|(v, i)| v - i).collect();
            let want_moved: Vec<f32> =
                fixture.values(&format!("{optimizer_name}.{name}")).iter().zip(&initial).map(|(v, i)| v - i).collect();
            Errors::note(&mut errors.steps, relative_error(&moved, &want_moved, 1e-6), &format!("{optimizer_name}: {name}"));
        }
    }
    errors
}

/// Fails, naming each part over its tolerance, unless the engine reproduces the fixture.
pub fn assert_known_answers(name: &str, bytes: &[u8]) -> Errors {
    let errors = measure(bytes);
    let over = errors.over(&TOLERANCES);
    assert!(over.is_empty(), "{name}: the engine is not PyTorch's known answers:\n{}", over.join("\n"));
    errors
}

/// The fixture's network with the tensors PyTorch's `optimizer` left after its steps.
pub fn network_after(bytes: &[u8], optimizer: &str) -> Network {
    Fixture::read(bytes).network(optimizer)
}

/// How far `network`'s evaluation-mode logits on the fixture's batch are from PyTorch's after
/// `optimizer`'s steps, relative as in [`Tolerances`].
pub fn eval_logits_error(bytes: &[u8], network: &mut Network, optimizer: &str) -> f64 {
    let fixture = Fixture::read(bytes);
    relative_error(&fixture.eval_logits(network), &fixture.values(&format!("{optimizer}.logits_eval")), 1e-6)
}

/// The presets as reference/torch/fer_torch.py spells them.
pub fn torch_presets() -> Vec<(String, ModelSpec)> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(PRESETS).expect("presets.json is an object");
    map.into_iter().map(|(name, spec)| (name, serde_json::from_value(spec).expect("a ModelSpec"))).collect()
}

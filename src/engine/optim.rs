//! Optimisers (SGD with classic or Nesterov momentum, Adam, AdamW) and learning-rate schedules.

use serde::{Deserialize, Serialize};

use super::layers::Param;
use super::tensor::{as_slice, as_slice_mut, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Weight decay is L2 added to the gradient.
    Sgd { momentum: f32, nesterov: bool },
    /// Weight decay is L2 added to the gradient (Kingma & Ba).
    Adam { beta1: f32, beta2: f32, epsilon: f32 },
    /// Weight decay is decoupled from the gradient (Loshchilov & Hutter).
    AdamW { beta1: f32, beta2: f32, epsilon: f32 },
}

impl OptimizerKind {
    pub fn sgd_nesterov() -> OptimizerKind {
        OptimizerKind::Sgd { momentum: 0.9, nesterov: true }
    }

    pub fn adam() -> OptimizerKind {
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    }

    pub fn adamw() -> OptimizerKind {
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    }

    /// Momentum and the moments' decay rates in [0, 1) (Adam's bias correction divides by
    /// 1 − β^t), ε positive.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let rate = |name: &str, value: f32| {
            if (0.0..1.0).contains(&value) {
                Ok(())
            } else {
                Err(format!("{name} {value} must be in [0, 1)"))
            }
        };
        match *self {
            OptimizerKind::Sgd { momentum, .. } => rate("momentum", momentum),
            OptimizerKind::Adam { beta1, beta2, epsilon } | OptimizerKind::AdamW { beta1, beta2, epsilon } => {
                rate("beta1", beta1)?;
                rate("beta2", beta2)?;
                if epsilon > 0.0 && epsilon.is_finite() {
                    Ok(())
                } else {
                    Err(format!("epsilon {epsilon} must be a positive number"))
                }
            }
        }
    }
}

/// Optimiser with per-parameter state (momentum / moment estimates), in `Network::params` order.
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub weight_decay: f32,
    /// SGD velocity, or Adam's first moment.
    first_moment: Vec<Tensor>,
    /// Adam's second moment (empty for SGD).
    second_moment: Vec<Tensor>,
    /// Updates applied so far (Adam's bias correction).
    pub steps: u64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, weight_decay: f32) -> Optimizer {
        Optimizer { kind, weight_decay, first_moment: Vec::new(), second_moment: Vec::new(), steps: 0 }
    }

    /// The state tensors, for checkpoints: first moments then second moments.
    pub fn state(&self) -> (&[Tensor], &[Tensor]) {
        (&self.first_moment, &self.second_moment)
    }

    pub fn set_state(&mut self, first_moment: Vec<Tensor>, second_moment: Vec<Tensor>, steps: u64) {
        self.first_moment = first_moment;
        self.second_moment = second_moment;
        self.steps = steps;
    }

    /// One update of every parameter from its accumulated gradient, at learning rate `lr`.
    pub fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        let uses_second_moment = !matches!(self.kind, OptimizerKind::Sgd { .. });
        if self.first_moment.len() != params.len() {
            self.first_moment = params.iter().map(|p| Tensor::zeros(p.value.raw_dim())).collect();
            self.second_moment =
                if uses_second_moment { params.iter().map(|p| Tensor::zeros(p.value.raw_dim())).collect() } else { Vec::new() };
        }
        self.steps += 1;
        let t = self.steps as i32;
        for (i, param) in params.iter_mut().enumerate() {
            let Param { value, grad, decay } = &mut **param;
            let decay = if *decay { self.weight_decay } else { 0.0 };
            let (value, grad) = (as_slice_mut(value), as_slice(grad));
            let m = as_slice_mut(&mut self.first_moment[i]);
            match self.kind {
                OptimizerKind::Sgd { momentum, nesterov } => {
                    for ((w, g), v) in value.iter_mut().zip(grad).zip(m.iter_mut()) {
                        let g = g + decay * *w;
                        *v = momentum * *v + g;
                        *w -= lr * if nesterov { g + momentum * *v } else { *v };
                    }
                }
                OptimizerKind::Adam { beta1, beta2, epsilon } | OptimizerKind::AdamW { beta1, beta2, epsilon } => {
                    let decoupled = matches!(self.kind, OptimizerKind::AdamW { .. });
                    let s = as_slice_mut(&mut self.second_moment[i]);
                    let (correction1, correction2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    for (((w, g), m), s) in value.iter_mut().zip(grad).zip(m.iter_mut()).zip(s.iter_mut()) {
                        let g = if decoupled { *g } else { g + decay * *w };
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *s = beta2 * *s + (1.0 - beta2) * g * g;
                        let update = (*m / correction1) / ((*s / correction2).sqrt() + epsilon);
                        *w -= lr * (update + if decoupled { decay * *w } else { 0.0 });
                    }
                }
            }
        }
    }
}

/// Learning rate as a function of the update number.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    /// Linear warm-up from 0, then half a cosine from the base rate down to `min_ratio × base`.
    Cosine {
        warmup_steps: u64,
        total_steps: u64,
        min_ratio: f32,
    },
}

impl LrSchedule {
    pub fn lr_at(&self, base_lr: f32, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Cosine { warmup_steps, total_steps, min_ratio } => {
                if step < warmup_steps {
                    return base_lr * (step + 1) as f32 / warmup_steps as f32;
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1);
                let progress = ((step - warmup_steps) as f32 / span as f32).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
                base_lr * (min_ratio + (1.0 - min_ratio) * cosine)
            }
        }
    }
}

//! Fully connected layer: `y [n, units] = x [n, inputs] · weightᵀ + bias`, weight `[units, inputs]`.

use ndarray::IxDyn;

use super::{fan_in_uniform, Layer, Mode, Param};
use crate::engine::tensor::{as_slice, as_slice_mut, gemm, matrix, matrix_mut, Rng, Tensor};

/// Batches up to this size skip sgemm in the forward pass.
const FEW_SAMPLES: usize = 4;

pub struct Dense {
    inputs: usize,
    units: usize,
    weight: Param,
    bias: Param,
    input: Option<Tensor>,
}

impl Dense {
    pub fn new(inputs: usize, units: usize, rng: &mut Rng) -> Dense {
        let weight = fan_in_uniform(&[units, inputs], inputs, rng);
        let bias = fan_in_uniform(&[units], inputs, rng);
        Dense { inputs, units, weight: Param::new(weight, true), bias: Param::new(bias, false), input: None }
    }
}

impl Layer for Dense {
    fn forward(&mut self, input: Tensor, mode: &mut Mode) -> Tensor {
        let n = input.shape()[0];
        let mut output = Tensor::zeros(IxDyn(&[n, self.units]));
        let y_slice = as_slice_mut(&mut output);
        for y_row in y_slice.chunks_exact_mut(self.units) {
            y_row.copy_from_slice(as_slice(&self.bias.value));
        }
        let x = matrix(as_slice(&input), n, self.inputs);
        let w = matrix(as_slice(&self.weight.value), self.units, self.inputs);
        if n <= FEW_SAMPLES {
            // Row-by-row dot products: sgemm would first copy (pack) the whole weight matrix,
            // which costs more than the product itself for one camera face.
            for (x_row, y_row) in x.rows().into_iter().zip(y_slice.chunks_exact_mut(self.units)) {
                for (y, w_row) in y_row.iter_mut().zip(w.rows()) {
                    *y += w_row.dot(&x_row);
                }
            }
        } else {
            gemm(1.0, &x, &w.t(), 1.0, &mut matrix_mut(y_slice, n, self.units));
        }
        if mode.is_train() {
            self.input = Some(input);
        }
        output
    }

    fn backward(&mut self, grad_output: Tensor, want_input_grad: bool) -> Option<Tensor> {
        let input = self.input.take().expect("Dense::backward needs a training-mode forward first");
        let n = input.shape()[0];
        let dy = matrix(as_slice(&grad_output), n, self.units);
        let x = matrix(as_slice(&input), n, self.inputs);
        gemm(1.0, &dy.t(), &x, 1.0, &mut matrix_mut(as_slice_mut(&mut self.weight.grad), self.units, self.inputs));
        for (b, column) in as_slice_mut(&mut self.bias.grad).iter_mut().zip(dy.columns()) {
            *b += column.sum();
        }
        want_input_grad.then(|| {
            let mut dx = Tensor::zeros(input.raw_dim());
            let w = matrix(as_slice(&self.weight.value), self.units, self.inputs);
            gemm(1.0, &dy, &w, 0.0, &mut matrix_mut(as_slice_mut(&mut dx), n, self.inputs));
            dx
        })
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight, &mut self.bias]
    }

    fn param_names(&self) -> &'static [&'static str] {
        &["weight", "bias"]
    }

    fn macs(&self) -> usize {
        self.inputs * self.units
    }
}

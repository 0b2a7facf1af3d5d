//! Every layer's backward pass against central finite differences of its forward pass.
//!
//! The scalar checked is `L = Σ r ⊙ layer(x)` for a fixed random `r`, so `dL/d output = r`.
//! Inputs are drawn away from ReLU's kink and with distinct values for max-pooling, so a
//! small step never crosses a non-differentiable point.

use fer_cnn::engine::layers::{build_layer, Layer, LayerSpec, Mode, Padding};
use fer_cnn::engine::loss::{smoothed_one_hot, softmax_cross_entropy};
use fer_cnn::engine::{ModelSpec, Network, Rng, Tensor};
use ndarray::{Array2, IxDyn};
use rand::{Rng as _, SeedableRng};

const STEP: f64 = 1e-3;

fn random_tensor(shape: &[usize], rng: &mut Rng) -> Tensor {
    // Magnitudes in [0.1, 1] with random sign: never within STEP of zero (ReLU's kink), and
    // continuous values, so ties in max-pooling have probability zero.
    Tensor::from_shape_simple_fn(IxDyn(shape), || {
        let magnitude = rng.random_range(0.1f32..1.0);
        if rng.random::<bool>() {
            magnitude
        } else {
            -magnitude
        }
    })
}

fn weighted_sum(output: &Tensor, weights: &Tensor) -> f64 {
    output.iter().zip(weights.iter()).map(|(&o, &w)| o as f64 * w as f64).sum()
}

/// Runs the layer forward in training mode with a dropout stream that restarts each call.
fn forward(layer: &mut dyn Layer, input: &Tensor) -> Tensor {
    let mut rng = Rng::seed_from_u64(99);
    layer.forward(input.clone(), &mut Mode::Train(&mut rng))
}

fn assert_close(what: &str, analytic: f64, numeric: f64) {
    let tolerance = 2e-2 * analytic.abs().max(numeric.abs()) + 1e-3;
    assert!((analytic - numeric).abs() <= tolerance, "{what}: analytic {analytic:.6} vs numeric {numeric:.6}");
}

/// Checks input and parameter gradients of `spec` built for per-sample shape `shape`, on a
/// batch of 3.
fn check_layer(spec: LayerSpec, shape: &[usize]) {
    check_layer_on_batch(spec, shape, 3);
}

fn check_layer_on_batch(spec: LayerSpec, shape: &[usize], batch: usize) {
    let mut rng = Rng::seed_from_u64(7);
    let (mut layer, _) = build_layer(&spec, &shape.to_vec(), &mut rng).expect("layer builds");
    let batch_shape: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
    let input = random_tensor(&batch_shape, &mut rng);
    let output = forward(layer.as_mut(), &input);
    let upstream = random_tensor(output.shape(), &mut rng);
    for param in layer.params_mut() {
        param.grad.fill(0.0);
    }
    let grad_input = layer.backward(upstream.clone(), true).expect("input gradient requested");
    assert_eq!(grad_input.shape(), input.shape(), "{spec:?}: input gradient shape");

    let loss_at = |layer: &mut dyn Layer, x: &Tensor| weighted_sum(&forward(layer, x), &upstream);
    for i in (0..input.len()).step_by((input.len() / 40).max(1)) {
        let mut plus = input.clone();
        plus.as_slice_mut().unwrap()[i] += STEP as f32;
        let mut minus = input.clone();
        minus.as_slice_mut().unwrap()[i] -= STEP as f32;
        let numeric = (loss_at(layer.as_mut(), &plus) - loss_at(layer.as_mut(), &minus)) / (2.0 * STEP);
        assert_close(&format!("{spec:?} d/dx[{i}]"), grad_input.as_slice().unwrap()[i] as f64, numeric);
    }

    let param_count = layer.params().len();
    for p in 0..param_count {
        let len = layer.params()[p].value.len();
        for i in (0..len).step_by((len / 20).max(1)) {
            let analytic = layer.params()[p].grad.as_slice().unwrap()[i] as f64;
            let original = layer.params()[p].value.as_slice().unwrap()[i];
            layer.params_mut()[p].value.as_slice_mut().unwrap()[i] = original + STEP as f32;
            let plus = loss_at(layer.as_mut(), &input);
            layer.params_mut()[p].value.as_slice_mut().unwrap()[i] = original - STEP as f32;
            let minus = loss_at(layer.as_mut(), &input);
            layer.params_mut()[p].value.as_slice_mut().unwrap()[i] = original;
            assert_close(&format!("{spec:?} param {p}[{i}]"), analytic, (plus - minus) / (2.0 * STEP));
        }
    }
}

fn conv(filters: usize, kernel: usize, stride: usize, padding: Padding) -> LayerSpec {
    LayerSpec::Conv2d { filters, kernel, stride, padding, groups: 1 }
}

fn grouped_conv(filters: usize, kernel: usize, groups: usize) -> LayerSpec {
    LayerSpec::Conv2d { filters, kernel, stride: 1, padding: Padding::Same, groups }
}

#[test]
fn conv2d_same_padding_odd_kernel() {
    check_layer(conv(4, 3, 1, Padding::Same), &[2, 7, 6]);
}

#[test]
fn conv2d_same_padding_even_kernel_is_asymmetric() {
    // The paper's 4x4 and 2x2 convolutions: TensorFlow-style padding, extra at bottom/right.
    check_layer(conv(3, 4, 1, Padding::Same), &[2, 6, 6]);
    check_layer(conv(3, 2, 1, Padding::Same), &[2, 5, 5]);
}

#[test]
fn conv2d_valid_and_strided() {
    check_layer(conv(3, 3, 1, Padding::Valid), &[2, 6, 7]);
    check_layer(conv(3, 3, 2, Padding::Same), &[2, 7, 7]);
    check_layer(conv(2, 3, 2, Padding::Explicit(1)), &[3, 8, 6]);
}

#[test]
fn conv2d_grouped() {
    check_layer(grouped_conv(4, 3, 2), &[6, 5, 5]);
    check_layer(grouped_conv(6, 2, 3), &[3, 4, 5]);
    check_layer_on_batch(grouped_conv(4, 3, 4), &[4, 5, 4], 19);
}

#[test]
fn conv2d_over_several_parallel_chunks() {
    // More samples than one chunk of `engine::parallel`: partial gradients are summed.
    check_layer_on_batch(conv(3, 3, 1, Padding::Same), &[2, 5, 5], 19);
}

/// Cross-correlation by its definition, `[n, c, h, w]` → `[n, f, oh, ow]`, stride 1; with a
/// weight `[f, c / groups, k, k]`, filter `f` sees only the channels of its group.
fn direct_conv(x: &Tensor, weight: &Tensor, bias: &Tensor, [out_h, out_w]: [usize; 2], [pad_top, pad_left]: [usize; 2]) -> Tensor {
    let (n, channels, in_h, in_w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (filters, group_channels, k) = (weight.shape()[0], weight.shape()[1], weight.shape()[2]);
    let group_filters = filters / (channels / group_channels);
    Tensor::from_shape_fn(IxDyn(&[n, filters, out_h, out_w]), |index| {
        let (s, f, oy, ox) = (index[0], index[1], index[2], index[3]);
        let first_channel = f / group_filters * group_channels;
        let mut sum = bias[[f]] as f64;
        for c in 0..group_channels {
            for ki in 0..k {
                for kj in 0..k {
                    let (iy, ix) = ((oy + ki) as isize - pad_top as isize, (ox + kj) as isize - pad_left as isize);
                    if (0..in_h as isize).contains(&iy) && (0..in_w as isize).contains(&ix) {
                        sum += weight[[f, c, ki, kj]] as f64 * x[[s, first_channel + c, iy as usize, ix as usize]] as f64;
                    }
                }
            }
        }
        sum as f32
    })
}

#[test]
fn conv2d_forward_is_the_definition() {
    // The gradient checks above test backward against forward; this tests forward itself
    // (im2col and its padding arithmetic), for odd and even kernels, every padding, channel
    // groups, one sample and several parallel chunks.
    let cases = [
        (conv(3, 3, 1, Padding::Same), [2, 7, 6], [1, 1]),
        (conv(4, 3, 1, Padding::Same), [5, 1, 1], [1, 1]),
        (conv(3, 4, 1, Padding::Same), [2, 6, 5], [1, 1]),
        (conv(2, 2, 1, Padding::Same), [3, 5, 5], [0, 0]),
        (conv(3, 3, 1, Padding::Valid), [2, 6, 7], [0, 0]),
        (conv(3, 3, 1, Padding::Explicit(2)), [3, 5, 4], [2, 2]),
        (grouped_conv(4, 3, 2), [6, 5, 5], [1, 1]),
        (grouped_conv(6, 2, 3), [3, 4, 5], [0, 0]),
    ];
    for (spec, shape, pads) in cases {
        for batch in [1, 19] {
            let mut rng = Rng::seed_from_u64(5);
            let (mut layer, out_shape) = build_layer(&spec, &shape.to_vec(), &mut rng).expect("layer builds");
            let bias = random_tensor(&[out_shape[0]], &mut rng);
            layer.params_mut()[1].value.assign(&bias);
            let input = random_tensor(&[batch, shape[0], shape[1], shape[2]], &mut rng);
            let expected = direct_conv(&input, &layer.params()[0].value, &bias, [out_shape[1], out_shape[2]], pads);
            let output = layer.forward(input, &mut Mode::Eval);
            assert_eq!(output.shape(), expected.shape(), "{spec:?} {shape:?}");
            let worst = output.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "{spec:?} {shape:?} batch {batch}: off by {worst}");
        }
    }
}

#[test]
fn max_pool() {
    check_layer(LayerSpec::MaxPool { window: 2, stride: 2 }, &[2, 6, 6]);
    check_layer(LayerSpec::MaxPool { window: 3, stride: 2 }, &[2, 7, 7]);
}

#[test]
fn avg_pool() {
    check_layer(LayerSpec::AvgPool { window: 2, stride: 2 }, &[2, 6, 6]);
    check_layer(LayerSpec::AvgPool { window: 3, stride: 1 }, &[2, 5, 5]);
}

#[test]
fn global_avg_pool() {
    check_layer(LayerSpec::GlobalAvgPool, &[3, 4, 5]);
}

#[test]
fn dense() {
    check_layer(LayerSpec::Dense { units: 5 }, &[8]);
}

#[test]
fn relu() {
    check_layer(LayerSpec::Relu, &[2, 4, 4]);
}

#[test]
fn flatten() {
    check_layer(LayerSpec::Flatten, &[2, 3, 4]);
}

#[test]
fn dropout() {
    check_layer(LayerSpec::Dropout { rate: 0.3 }, &[40]);
}

#[test]
fn batch_norm_on_images_and_features() {
    check_layer(LayerSpec::BatchNorm, &[3, 4, 4]);
    check_layer(LayerSpec::BatchNorm, &[6]);
}

#[test]
fn softmax_cross_entropy_gradient() {
    let mut rng = Rng::seed_from_u64(3);
    let logits = Array2::from_shape_fn((4, 7), |_| rng.random_range(-3.0f32..3.0));
    let targets = smoothed_one_hot(&[0, 3, 6, 2], 7, 0.1);
    let weights = [1.0, 2.0, 0.5, 1.5];
    let analytic = softmax_cross_entropy(logits.view(), targets.view(), Some(&weights)).grad_logits;
    for i in 0..4 {
        for k in 0..7 {
            let mut plus = logits.clone();
            plus[(i, k)] += STEP as f32;
            let mut minus = logits.clone();
            minus[(i, k)] -= STEP as f32;
            let loss = |l: &Array2<f32>| softmax_cross_entropy(l.view(), targets.view(), Some(&weights)).loss as f64;
            assert_close(&format!("d loss / d logit[{i},{k}]"), analytic[(i, k)] as f64, (loss(&plus) - loss(&minus)) / (2.0 * STEP));
        }
    }
}

#[test]
fn whole_network_parameter_gradients() {
    let spec = ModelSpec {
        name: "gradient-check".into(),
        input: [1, 8, 8],
        layers: vec![
            conv(3, 3, 1, Padding::Same),
            LayerSpec::BatchNorm,
            LayerSpec::Relu,
            LayerSpec::MaxPool { window: 2, stride: 2 },
            conv(4, 2, 1, Padding::Same),
            LayerSpec::Relu,
            LayerSpec::AvgPool { window: 2, stride: 2 },
            LayerSpec::Flatten,
            LayerSpec::Dense { units: 6 },
            LayerSpec::Relu,
            LayerSpec::Dense { units: 3 },
        ],
        classes: 3,
    };
    // Weights with no ReLU or max-pool kink within STEP of any checked parameter's value (seed 5's
    // put one there once conv and dense layers drew as PyTorch does: numeric −0.0298 at STEP,
    // −0.0280 at a tenth of it, analytic −0.0281).
    let mut network = Network::new(spec, 6).unwrap();
    let mut rng = Rng::seed_from_u64(11);
    let input = random_tensor(&[4, 1, 8, 8], &mut rng);
    let targets = smoothed_one_hot(&[0, 1, 2, 1], 3, 0.0);
    let loss_of = |network: &mut Network| {
        let logits = network.forward(input.clone(), &mut Mode::Train(&mut Rng::seed_from_u64(0)));
        softmax_cross_entropy(logits.view(), targets.view(), None)
    };
    let out = loss_of(&mut network);
    network.zero_grad();
    network.backward(out.grad_logits);
    let analytic: Vec<Vec<f32>> = network.params().iter().map(|p| p.grad.iter().copied().collect()).collect();
    for (p, grads) in analytic.iter().enumerate() {
        for i in (0..grads.len()).step_by((grads.len() / 10).max(1)) {
            let original = network.params()[p].value.as_slice().unwrap()[i];
            network.params_mut()[p].value.as_slice_mut().unwrap()[i] = original + STEP as f32;
            let plus = loss_of(&mut network).loss as f64;
            network.params_mut()[p].value.as_slice_mut().unwrap()[i] = original - STEP as f32;
            let minus = loss_of(&mut network).loss as f64;
            network.params_mut()[p].value.as_slice_mut().unwrap()[i] = original;
            assert_close(&format!("network param {p}[{i}]"), grads[i] as f64, (plus - minus) / (2.0 * STEP));
        }
    }
}

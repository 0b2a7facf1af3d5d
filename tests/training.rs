//! Training end to end on small synthetic data: the loss goes down and the set is fitted;
//! checkpoints resume exactly; the optimisers and schedules behave as specified; batch-norm
//! statistics are recalibrated as specified; distillation follows its teacher.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use fer_cnn::data::input::{augment_face, face_to_input, AugmentConfig, Warp};
use fer_cnn::data::{FACE_PIXELS, FACE_SIDE};
use fer_cnn::engine::loss::{smoothed_one_hot, softmax_cross_entropy};
use fer_cnn::engine::network::batch_tensor;
use fer_cnn::engine::{LayerSpec, LrSchedule, Mode, ModelSpec, Network, OptimizerKind, Rng, Tensor};
use fer_cnn::inference::{evaluate, predict_faces, Tta};
use fer_cnn::models::preset;
use fer_cnn::train::{Schedule, Teacher, TrainConfig, Trainer, TrainingRun, RECALIBRATION_FACES};
use ndarray::{Axis, IxDyn};
use rand::{Rng as _, SeedableRng};
use std::collections::HashMap;

fn synthetic(per_class: usize) -> fer_cnn::data::Dataset {
    common::parse_in_chunks(common::synthetic_csv(per_class, &["Training"], 77).as_bytes(), 1 << 16).dataset
}

fn fit(spec: ModelSpec, config: TrainConfig) -> (Vec<f32>, f32) {
    let data = synthetic(10);
    let rows: Vec<usize> = (0..data.len()).collect();
    let mut run = TrainingRun::new(Network::new(spec, 1).unwrap(), config, &data, None, Tta::None).unwrap();
    assert_eq!(run.train_rows(), rows);
    let mut losses = Vec::new();
    while !run.is_finished() {
        run.train_slice(&data, usize::MAX);
        losses.push(run.end_epoch(&data).train.loss);
    }
    let accuracy = evaluate(run.network_mut(), &data, &rows, Tta::None).accuracy;
    (losses, accuracy)
}

#[test]
fn seed_preset_drives_the_loss_down_and_fits_the_set() {
    let config = TrainConfig { epochs: 30, batch_size: 10, lr: 3e-3, ..TrainConfig::default() };
    let (losses, accuracy) = fit(preset("seed").unwrap(), config);
    assert!(losses.last().unwrap() < &(losses[0] * 0.3), "losses {losses:?}");
    assert!(accuracy > 0.95, "train accuracy {accuracy}");
}

#[test]
fn deep_preset_with_sgd_augmentation_and_smoothing_learns() {
    let config = TrainConfig {
        epochs: 10,
        batch_size: 14,
        lr: 0.01,
        optimizer: OptimizerKind::sgd_nesterov(),
        weight_decay: 5e-4,
        schedule: Schedule::Cosine { warmup_epochs: 1 },
        label_smoothing: 0.1,
        // No flips: mirroring moves the synthetic faces' square onto another class's place.
        augment: Some(AugmentConfig { flip: false, erase_probability: 0.0, ..AugmentConfig::default() }),
        class_weights: true,
        ..TrainConfig::default()
    };
    let (losses, accuracy) = fit(preset("deep").unwrap(), config);
    assert!(losses.last().unwrap() < &(losses[0] * 0.6), "losses {losses:?}");
    assert!(accuracy > 0.9, "train accuracy {accuracy} losses {losses:?}");
}

#[test]
fn mlp_with_adamw_and_mixup_learns() {
    let config = TrainConfig {
        epochs: 20,
        batch_size: 10,
        lr: 1e-3,
        optimizer: OptimizerKind::adamw(),
        weight_decay: 0.01,
        mixup_alpha: 0.2,
        ..TrainConfig::default()
    };
    let (losses, accuracy) = fit(preset("mlp").unwrap(), config);
    assert!(losses.last().unwrap() < &(losses[0] * 0.7), "losses {losses:?}");
    assert!(accuracy > 0.9, "train accuracy {accuracy}");
}

#[test]
fn sharpness_aware_training_learns() {
    let config = TrainConfig { epochs: 30, batch_size: 10, lr: 3e-3, sam_rho: 0.05, ..TrainConfig::default() };
    let (losses, accuracy) = fit(preset("seed").unwrap(), config);
    assert!(losses.last().unwrap() < &(losses[0] * 0.3), "losses {losses:?}");
    assert!(accuracy > 0.95, "train accuracy {accuracy}");
}

/// Loss and its gradient (added to each parameter's `grad`) for the whole of `data`.
fn loss_and_gradient(network: &mut Network, data: &fer_cnn::data::Dataset, rows: &[usize]) -> f32 {
    let mut inputs = vec![0.0; rows.len() * FACE_PIXELS];
    for (face, &row) in inputs.chunks_mut(FACE_PIXELS).zip(rows) {
        face_to_input(data.face(row), face);
    }
    let input = batch_tensor([1, FACE_SIDE, FACE_SIDE], inputs).unwrap();
    let labels: Vec<u8> = rows.iter().map(|&r| data.label(r)).collect();
    let logits = network.forward(input, &mut Mode::Train(&mut Rng::seed_from_u64(0)));
    let out = softmax_cross_entropy(logits.view(), smoothed_one_hot(&labels, 7, 0.0).view(), None);
    network.zero_grad();
    network.backward(out.grad_logits);
    out.loss
}

#[test]
fn a_sharpness_aware_step_descends_the_gradient_at_the_perturbed_weights() {
    // Known answer with plain SGD (no momentum or decay) on one batch of every face:
    // w ← w − lr · ∇L(w + ρ · ∇L(w) / ‖∇L(w)‖).
    let data = synthetic(2);
    let rows: Vec<usize> = (0..data.len()).collect();
    let (lr, rho) = (0.1, 0.5);
    let optimizer = OptimizerKind::Sgd { momentum: 0.0, nesterov: false };
    let config = TrainConfig { epochs: 1, batch_size: rows.len(), lr, optimizer, sam_rho: rho, ..TrainConfig::default() };
    let mut trainer = Trainer::new(Network::new(preset("seed").unwrap(), 5).unwrap(), config, &data, rows.clone()).unwrap();
    trainer.train_step(&data);

    let mut expected = Network::new(preset("seed").unwrap(), 5).unwrap();
    loss_and_gradient(&mut expected, &data, &rows);
    let norm = expected.params().iter().flat_map(|p| p.grad.iter()).map(|g| g * g).sum::<f32>().sqrt();
    let steps: Vec<Tensor> = expected.params().iter().map(|p| &p.grad * (rho / norm)).collect();
    for (param, step) in expected.params_mut().into_iter().zip(&steps) {
        param.value += step;
    }
    loss_and_gradient(&mut expected, &data, &rows);
    let mut largest_step = 0.0f32;
    for (param, step) in expected.params_mut().into_iter().zip(&steps) {
        param.value -= step;
        let update = &param.grad * lr;
        largest_step = update.iter().fold(largest_step, |m, u| m.max(u.abs()));
        param.value -= &update;
    }
    assert!(largest_step > 1e-3, "the step should move the weights ({largest_step})");
    for (got, want) in trainer.network.params().iter().zip(expected.params()) {
        let error = (&got.value - &want.value).iter().fold(0.0f32, |m, e| m.max(e.abs()));
        assert!(error < 1e-5, "largest difference {error}");
    }
}

#[test]
fn training_is_deterministic_given_a_seed() {
    let config = TrainConfig { epochs: 2, batch_size: 16, augment: Some(AugmentConfig::default()), ..TrainConfig::default() };
    let a = fit(preset("seed").unwrap(), config.clone());
    let b = fit(preset("seed").unwrap(), config);
    assert_eq!(a.0, b.0);
}

#[test]
fn a_checkpoint_resumes_exactly_where_training_stopped() {
    let data = synthetic(4);
    let rows: Vec<usize> = (0..data.len()).collect();
    let config = TrainConfig {
        epochs: 3,
        batch_size: 8,
        optimizer: OptimizerKind::sgd_nesterov(),
        lr: 0.01,
        augment: Some(AugmentConfig::default()),
        ..TrainConfig::default()
    };
    let network = || Network::new(preset("seed").unwrap(), 3).unwrap();
    let mut straight = Trainer::new(network(), config.clone(), &data, rows.clone()).unwrap();
    let straight_losses: Vec<f32> = (0..8).map(|_| straight.train_step(&data).loss).collect();

    let mut first = Trainer::new(network(), config, &data, rows.clone()).unwrap();
    let mut resumed_losses: Vec<f32> = (0..5).map(|_| first.train_step(&data).loss).collect();
    let checkpoint = first.checkpoint().unwrap();
    let mut second = Trainer::resume(&checkpoint, &data, rows.clone(), None, None).unwrap();
    resumed_losses.extend((0..3).map(|_| second.train_step(&data).loss));
    assert_eq!(straight_losses, resumed_losses);

    let wrong_rows = Trainer::resume(&checkpoint, &data, rows[..10].to_vec(), None, None);
    assert!(wrong_rows.is_err());
}

/// A teacher that is sure of the class after each face's label (and so disagrees with every label).
fn contrary_teacher(data: &fer_cnn::data::Dataset, rows: &[usize], weight: f32) -> Teacher {
    let probabilities: HashMap<usize, [f32; 7]> =
        rows.iter().map(|&r| (r, std::array::from_fn(|k| if k == (data.label(r) as usize + 1) % 7 { 1.0 } else { 0.0 }))).collect();
    Teacher::from_probabilities(probabilities, weight).unwrap()
}

#[test]
fn distillation_with_full_weight_learns_the_teachers_classes_not_the_labels() {
    let data = synthetic(10);
    let rows: Vec<usize> = (0..data.len()).collect();
    let config = TrainConfig { epochs: 30, batch_size: 10, lr: 3e-3, ..TrainConfig::default() };
    let trainer = Trainer::new(Network::new(preset("seed").unwrap(), 1).unwrap(), config, &data, rows.clone()).unwrap();
    let mut trainer = trainer.distil_from(contrary_teacher(&data, &rows, 1.0)).unwrap();
    while !trainer.is_finished() {
        trainer.train_step(&data);
    }
    let faces: Vec<u8> = rows.iter().flat_map(|&r| data.face(r).to_vec()).collect();
    let probs = predict_faces(&mut trainer.network, &faces, Tta::None);
    let follows_teacher = rows
        .iter()
        .zip(probs.axis_iter(Axis(0)))
        .filter(|(&r, p)| {
            let predicted = p.iter().enumerate().fold(0, |best, (k, &q)| if q > p[best] { k } else { best });
            predicted == (data.label(r) as usize + 1) % 7
        })
        .count();
    assert!(follows_teacher as f32 > 0.9 * rows.len() as f32, "{follows_teacher} of {} follow the teacher", rows.len());
}

#[test]
fn distillation_blends_label_and_teacher_by_the_weight() {
    // Known answer: with weight 0.3, the loss of the first step is the cross-entropy to
    // 0.7 × label + 0.3 × teacher, from the untrained network's probabilities (the `seed`
    // preset has no dropout or batch-norm, so training mode predicts like evaluation).
    let data = synthetic(2);
    let rows: Vec<usize> = (0..data.len()).collect();
    let config = TrainConfig { epochs: 1, batch_size: rows.len(), ..TrainConfig::default() };
    let mut network = Network::new(preset("seed").unwrap(), 5).unwrap();
    let faces: Vec<u8> = rows.iter().flat_map(|&r| data.face(r).to_vec()).collect();
    let probs = predict_faces(&mut network, &faces, Tta::None);
    let expected: f32 = rows
        .iter()
        .map(|&r| {
            let label = data.label(r) as usize;
            -0.7 * probs[[r, label]].ln() - 0.3 * probs[[r, (label + 1) % 7]].ln()
        })
        .sum::<f32>()
        / rows.len() as f32;
    let mut trainer = Trainer::new(network, config, &data, rows.clone()).unwrap().distil_from(contrary_teacher(&data, &rows, 0.3)).unwrap();
    let loss = trainer.train_step(&data).loss;
    assert!((loss - expected).abs() < 1e-4, "loss {loss}, expected {expected}");
}

#[test]
fn a_teacher_measures_the_networks_averaged_views() {
    let data = synthetic(2);
    let rows: Vec<usize> = (0..data.len()).step_by(2).collect();
    let mut network = Network::new(preset("seed").unwrap(), 9).unwrap();
    let mut progress = Vec::new();
    let teacher = Teacher::measure(&mut network, &data, &rows, Tta::Flip, 0.5, |done| progress.push(done)).unwrap();
    assert_eq!(progress.last(), Some(&rows.len()));
    let faces: Vec<u8> = rows.iter().flat_map(|&r| data.face(r).to_vec()).collect();
    let expected = predict_faces(&mut network, &faces, Tta::Flip);
    for (&row, p) in rows.iter().zip(expected.axis_iter(Axis(0))) {
        assert_eq!(teacher.probabilities(row).unwrap().as_slice(), p.as_slice().unwrap());
    }
    assert!(teacher.probabilities(1).is_none(), "row 1 was not measured");
    // A student must be covered by its teacher.
    let all: Vec<usize> = (0..data.len()).collect();
    let trainer = Trainer::new(network, TrainConfig::default(), &data, all).unwrap();
    assert!(trainer.distil_from(teacher).is_err());
}

#[test]
fn a_teacher_must_give_distributions_and_a_weight_in_0_1() {
    let uniform = HashMap::from([(0, [1.0 / 7.0; 7])]);
    for weight in [0.0, -0.5, 1.5, f32::NAN] {
        assert!(Teacher::from_probabilities(uniform.clone(), weight).is_err(), "weight {weight}");
    }
    assert!(Teacher::from_probabilities(uniform, 1.0).is_ok());
    assert!(Teacher::from_probabilities(HashMap::from([(0, [0.5; 7])]), 0.5).is_err());
    assert!(Teacher::from_probabilities(HashMap::from([(0, [f32::NAN; 7])]), 0.5).is_err());
}

#[test]
fn a_distilling_checkpoint_resumes_exactly_and_only_with_its_teacher() {
    let data = synthetic(4);
    let rows: Vec<usize> = (0..data.len()).collect();
    let config = TrainConfig { epochs: 2, batch_size: 8, lr: 0.01, optimizer: OptimizerKind::sgd_nesterov(), ..TrainConfig::default() };
    let trainer = || {
        Trainer::new(Network::new(preset("seed").unwrap(), 3).unwrap(), config.clone(), &data, rows.clone())
            .unwrap()
            .distil_from(contrary_teacher(&data, &rows, 0.7))
            .unwrap()
    };
    let mut straight = trainer();
    let straight_losses: Vec<f32> = (0..6).map(|_| straight.train_step(&data).loss).collect();
    let mut first = trainer();
    let mut resumed_losses: Vec<f32> = (0..3).map(|_| first.train_step(&data).loss).collect();
    let checkpoint = first.checkpoint().unwrap();
    assert!(Trainer::resume(&checkpoint, &data, rows.clone(), None, None).is_err(), "resumed without its teacher");
    let mut second = Trainer::resume(&checkpoint, &data, rows.clone(), None, Some(contrary_teacher(&data, &rows, 0.7))).unwrap();
    resumed_losses.extend((0..3).map(|_| second.train_step(&data).loss));
    assert_eq!(straight_losses, resumed_losses);

    let plain = Trainer::new(Network::new(preset("seed").unwrap(), 3).unwrap(), config.clone(), &data, rows.clone()).unwrap();
    let plain_checkpoint = plain.checkpoint().unwrap();
    assert!(Trainer::resume(&plain_checkpoint, &data, rows.clone(), None, Some(contrary_teacher(&data, &rows, 0.7))).is_err());
}

#[test]
fn bad_training_options_are_errors() {
    let data = synthetic(1);
    let rows: Vec<usize> = (0..data.len()).collect();
    let network = || Network::new(preset("seed").unwrap(), 3).unwrap();
    for config in [
        TrainConfig { batch_size: 0, ..TrainConfig::default() },
        TrainConfig { epochs: 0, ..TrainConfig::default() },
        TrainConfig { lr: f32::NAN, ..TrainConfig::default() },
        TrainConfig { label_smoothing: 1.0, ..TrainConfig::default() },
        TrainConfig { sam_rho: -0.05, ..TrainConfig::default() },
    ] {
        assert!(Trainer::new(network(), config, &data, rows.clone()).is_err());
    }
    assert!(Trainer::new(network(), TrainConfig::default(), &data, Vec::new()).is_err());
    assert!(Trainer::new(network(), TrainConfig::default(), &data, vec![10_000]).is_err());
}

#[test]
fn cosine_schedule_warms_up_then_decays() {
    let schedule = LrSchedule::Cosine { warmup_steps: 10, total_steps: 110, min_ratio: 0.01 };
    assert!((schedule.lr_at(1.0, 0) - 0.1).abs() < 1e-6);
    assert!((schedule.lr_at(1.0, 9) - 1.0).abs() < 1e-6);
    assert!((schedule.lr_at(1.0, 60) - 0.505).abs() < 1e-3);
    assert!((schedule.lr_at(1.0, 110) - 0.01).abs() < 1e-6);
}

#[test]
fn augmentation_without_changes_is_the_identity_and_flip_mirrors() {
    let face = common::synthetic_face(2, &mut common::Lcg(1));
    let mut plain = vec![0.0; FACE_PIXELS];
    face_to_input(&face, &mut plain);
    let none = AugmentConfig { max_shift: 0.0, max_rotation_deg: 0.0, max_scale: 0.0, flip: false, erase_probability: 0.0 };
    let mut out = vec![0.0; FACE_PIXELS];
    augment_face(&face, &mut out, &none, &mut Rng::seed_from_u64(0));
    assert_eq!(out, plain);

    Warp { flip: true, ..Warp::IDENTITY }.apply(&face, &mut out);
    for y in 0..FACE_SIDE {
        for x in 0..FACE_SIDE {
            assert_eq!(out[y * FACE_SIDE + x], plain[y * FACE_SIDE + FACE_SIDE - 1 - x]);
        }
    }
    // A whole-pixel shift moves the picture: output (x, y) reads source (x − 3, y).
    Warp { shift_x: 3.0, ..Warp::IDENTITY }.apply(&face, &mut out);
    assert_eq!(out[10 * FACE_SIDE + 20], plain[10 * FACE_SIDE + 17]);
}

/// A network that is one batch-norm layer over 2 channels of 2x2 pixels, then a dense layer.
fn batch_norm_network() -> Network {
    let spec = ModelSpec {
        name: "batch-norm".into(),
        input: [2, 2, 2],
        layers: vec![LayerSpec::BatchNorm, LayerSpec::Flatten, LayerSpec::Dense { units: 3 }],
        classes: 3,
    };
    Network::new(spec, 1).unwrap()
}

#[test]
fn recalibration_makes_running_statistics_the_mean_over_batches() {
    let mut rng = Rng::seed_from_u64(4);
    let batches: Vec<Tensor> =
        [3, 5, 4].iter().map(|&n| Tensor::from_shape_simple_fn(IxDyn(&[n, 2, 2, 2]), || rng.random_range(-1.0f32..3.0))).collect();
    // Known answer: per channel, the mean over batches of each batch's mean and of its
    // unbiased variance (over samples and pixels).
    let mut expected_mean = [0.0f64; 2];
    let mut expected_var = [0.0f64; 2];
    for batch in &batches {
        for (ch, (mean, var)) in expected_mean.iter_mut().zip(&mut expected_var).enumerate() {
            let values: Vec<f64> = batch.index_axis(Axis(1), ch).iter().map(|&v| v as f64).collect();
            let m = values.iter().sum::<f64>() / values.len() as f64;
            let v = values.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (values.len() - 1) as f64;
            *mean += m / batches.len() as f64;
            *var += v / batches.len() as f64;
        }
    }
    let mut network = batch_norm_network();
    // Training first, so the old running statistics are something else entirely.
    network.forward(batches[0].mapv(|v| v * 10.0 + 5.0), &mut Mode::Train(&mut rng));
    network.recalibrate_batch_norm(batches.clone());
    let running = |name: &str| network.tensor(&format!("layers.0.{name}")).unwrap().iter().map(|&v| v as f64).collect::<Vec<_>>();
    for ch in 0..2 {
        assert!((running("running_mean")[ch] - expected_mean[ch]).abs() < 1e-5, "mean {:?} vs {expected_mean:?}", running("running_mean"));
        assert!((running("running_var")[ch] - expected_var[ch]).abs() < 1e-5, "var {:?} vs {expected_var:?}", running("running_var"));
    }
}

#[test]
fn recalibrated_evaluation_matches_training_mode_on_the_same_faces() {
    let mut rng = Rng::seed_from_u64(5);
    let batch = Tensor::from_shape_simple_fn(IxDyn(&[400, 2, 2, 2]), || rng.random_range(2.0f32..6.0));
    let mut network = batch_norm_network();
    let train_mode = network.forward(batch.clone(), &mut Mode::Train(&mut rng));
    network.recalibrate_batch_norm([batch.clone()]);
    let eval_mode = network.forward(batch, &mut Mode::Eval);
    // Equal but for the running variance being the unbiased one (a factor 1600/1599).
    let worst = (&train_mode - &eval_mode).iter().fold(0.0f32, |m, d| m.max(d.abs()));
    assert!(worst < 2e-3, "largest difference {worst}");
}

#[test]
fn the_end_of_an_epoch_recalibrates_batch_norm_models_only_and_deterministically() {
    let data = synthetic(4);
    let rows: Vec<usize> = (0..data.len()).collect();
    let config = TrainConfig { epochs: 1, batch_size: 14, augment: Some(AugmentConfig::default()), ..TrainConfig::default() };
    let trained = |preset_name: &str| {
        let network = Network::new(preset(preset_name).unwrap(), 2).unwrap();
        let mut run = TrainingRun::new(network, config.clone(), &data, None, Tta::None).unwrap();
        assert!(run.train_slice(&data, usize::MAX).epoch_finished);
        run
    };
    let tensors =
        |run: &TrainingRun| -> Vec<Vec<f32>> { run.network().named_tensors().iter().map(|(_, t)| t.iter().copied().collect()).collect() };

    let mut seed = trained("seed");
    let before = tensors(&seed);
    assert_eq!(seed.end_epoch(&data).recalibrated_on, 0, "the paper's CNN has no batch-norm");
    assert_eq!(tensors(&seed), before);

    let (mut a, mut b) = (trained("deep"), trained("deep"));
    let before = tensors(&a);
    assert_eq!(a.end_epoch(&data).recalibrated_on, rows.len().min(RECALIBRATION_FACES));
    b.end_epoch(&data);
    assert_eq!(tensors(&a), tensors(&b));
    let changed = |name: &str| {
        let at = a.network().named_tensors().iter().position(|(n, _)| n == name).unwrap();
        tensors(&a)[at] != before[at]
    };
    assert!(changed("layers.1.running_mean") && changed("layers.1.running_var"));
    assert!(!changed("layers.0.weight") && !changed("layers.1.gamma"), "only statistics change");
}

#[test]
fn a_diverging_run_stops_with_the_starting_weights_restored_and_says_what_to_try() {
    let data = synthetic(4);
    let config = TrainConfig { epochs: 3, batch_size: 7, lr: 1e10, optimizer: OptimizerKind::sgd_nesterov(), ..TrainConfig::default() };
    let network = Network::new(preset("seed").unwrap(), 1).unwrap();
    let start: Vec<Tensor> = network.named_tensors().into_iter().map(|(_, t)| t.clone()).collect();
    let mut run = TrainingRun::new(network, config, &data, None, Tta::None).unwrap();
    let slice = run.train_slice(&data, usize::MAX);
    let divergence = slice.diverged.expect("a learning rate of 1e10 diverges");
    assert!(slice.finished && run.is_finished());
    assert_eq!((divergence.epoch, divergence.restored_epoch), (1, 0));
    assert!(
        divergence.message.contains("became NaN or infinite") && divergence.message.contains("1000000000 instead of 10000000000"),
        "{}",
        divergence.message
    );
    let now: Vec<Tensor> = run.network().named_tensors().into_iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(now, start, "the starting weights are back");
    assert_eq!(run.train_slice(&data, usize::MAX).steps, 0, "a diverged run trains no more");
}

#[test]
fn a_run_that_breaks_after_an_epoch_gets_that_epochs_weights_back() {
    let data = synthetic(4);
    let config = TrainConfig { epochs: 3, batch_size: 7, augment: Some(AugmentConfig::default()), ..TrainConfig::default() };
    let mut run = TrainingRun::new(Network::new(preset("deep").unwrap(), 1).unwrap(), config, &data, None, Tta::None).unwrap();
    run.train_slice(&data, usize::MAX);
    run.end_epoch(&data);
    let after_epoch: Vec<Tensor> = run.network().named_tensors().into_iter().map(|(_, t)| t.clone()).collect();
    run.train_slice(&data, 1);
    // A weight that stopped being a number, as an overflow leaves it.
    run.network_mut().named_tensors_mut()[0].1.iter_mut().next().map(|w| *w = f32::INFINITY);
    let divergence = run.train_slice(&data, usize::MAX).diverged.expect("an infinite weight is noticed");
    assert_eq!((divergence.epoch, divergence.restored_epoch), (2, 1));
    assert!(divergence.message.contains("the weights after epoch 1 are restored"), "{}", divergence.message);
    let now: Vec<Tensor> = run.network().named_tensors().into_iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(now, after_epoch);
}

/// Found by `./build.sh fuzz` (training_options): a shift of 1e38 pixels overflowed the warp's
/// pixel index, and limits that wide panic in the random draw; such options are refused.
#[test]
fn augmentation_and_optimiser_constants_out_of_range_are_refused() {
    let augment = |change: fn(&mut AugmentConfig)| {
        let mut augment = AugmentConfig::default();
        change(&mut augment);
        TrainConfig { augment: Some(augment), ..TrainConfig::default() }
    };
    let refused = [
        (augment(|a| a.max_shift = 1e38), "shift"),
        (augment(|a| a.max_rotation_deg = 1e38), "rotation"),
        (augment(|a| a.max_scale = -1.0), "zoom"),
        (augment(|a| a.max_scale = 1.0), "zoom"),
        (augment(|a| a.erase_probability = 2.0), "erasing"),
        (TrainConfig { optimizer: OptimizerKind::Adam { beta1: 1.0, beta2: 0.999, epsilon: 1e-8 }, ..TrainConfig::default() }, "beta1"),
        (TrainConfig { optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 2.0, epsilon: 1e-8 }, ..TrainConfig::default() }, "beta2"),
        (TrainConfig { optimizer: OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, epsilon: 0.0 }, ..TrainConfig::default() }, "epsilon"),
        (TrainConfig { optimizer: OptimizerKind::Sgd { momentum: -5.0, nesterov: true }, ..TrainConfig::default() }, "momentum"),
    ];
    for (config, word) in refused {
        let message = config.validate().expect_err(word).to_string();
        assert!(message.contains(word), "{message}");
    }
    assert!(augment(|a| a.max_shift = 48.0).validate().is_ok());
}

#[test]
fn a_warp_far_outside_the_face_reads_the_border() {
    use fer_cnn::data::input::Warp;
    let face: Vec<u8> = (0..48 * 48).map(|i| (i % 48 * 5) as u8).collect();
    let mut out = vec![0.0; 48 * 48];
    Warp { shift_x: 1e38, ..Warp::IDENTITY }.apply(&face, &mut out);
    assert!(out.iter().all(|v| v.is_finite()));
    assert!(out.iter().all(|&v| v == out[0]), "every pixel is the left border's, as the face is shifted far right");
}

#[test]
fn the_suggested_recipe_trains_a_preset_on_every_training_face() {
    let presets = fer_cnn::train::presets_with_recipes();
    let suggested =
        &presets.iter().find(|p| p.name == fer_cnn::train::SUGGESTED_PRESET).expect("the suggested preset is in the menu").recipe;
    assert_eq!(suggested.limit, None, "the page's suggested recipe uses the whole file");
    assert!(suggested.config.augment.is_some());
}

//! Merging models into one network: its logits are the mean of the members' logits, for every
//! kind of layer the presets use, and it saves and loads like any model.

use fer_cnn::engine::layers::LayerSpec;
use fer_cnn::engine::{Mode, ModelSpec, Network, Padding, Tensor};
use fer_cnn::models::{load_model, merge, preset, save_model, StoredDtype};
use ndarray::{Array2, IxDyn};

fn faces(n: usize, salt: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(&[n, 1, 48, 48]), |idx| ((idx[0] * 31 + idx[2] * 7 + idx[3] * 3 + salt) % 255) as f32 / 64.0 - 2.0)
}

/// `spec` with weights from `seed` and, where it has batch-norm, statistics measured on faces
/// and scales and shifts that differ per channel, as a trained model's do.
fn trained_like(spec: ModelSpec, seed: u64) -> Network {
    let mut network = Network::new(spec, seed).unwrap();
    for (name, tensor) in network.named_tensors_mut() {
        if name.ends_with("gamma") || name.ends_with("beta") {
            tensor.indexed_iter_mut().for_each(|(i, v)| *v = 0.1 * ((i[0] + seed as usize) % 7) as f32 + 0.3);
        } else if name.ends_with("bias") {
            tensor.indexed_iter_mut().for_each(|(i, v)| *v = 0.02 * ((i[0] * 3 + seed as usize) % 5) as f32 - 0.04);
        }
    }
    network.recalibrate_batch_norm([faces(16, seed as usize)]);
    network
}

fn logits(network: &mut Network) -> Array2<f32> {
    network.forward(faces(3, 101), &mut Mode::Eval)
}

/// Merges members built from `spec` and checks the merged logits against the members' mean.
fn check_merge(spec: ModelSpec, seeds: &[u64]) -> Network {
    let mut members: Vec<Network> = seeds.iter().map(|&seed| trained_like(spec.clone(), seed)).collect();
    let mut merged = merge(&members).unwrap();
    let mut mean = Array2::<f32>::zeros((3, spec.classes));
    for member in &mut members {
        mean += &logits(member);
    }
    mean /= seeds.len() as f32;
    let got = logits(&mut merged);
    let worst = got.iter().zip(mean.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let spread = mean.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4 * spread.max(1.0), "{}: merged logits off the members' mean by {worst}", spec.name);
    merged
}

#[test]
fn a_merged_vgg_computes_the_mean_of_its_members_logits() {
    // Convolutions, batch-norm, pooling, dropout and the classifier.
    let merged = check_merge(preset("deep").unwrap(), &[1, 2]);
    assert_eq!(merged.spec().name, "deep-x2");
    let convs: Vec<(usize, usize)> = merged
        .spec()
        .layers
        .iter()
        .filter_map(|l| match *l {
            LayerSpec::Conv2d { filters, groups, .. } => Some((filters, groups)),
            _ => None,
        })
        .collect();
    // The first reads the shared input; every later one keeps the members apart.
    assert_eq!(convs, [(64, 1), (64, 2), (128, 2), (128, 2), (256, 2), (256, 2), (512, 2)]);
    assert_eq!(merged.macs(), 2 * Network::new(preset("deep").unwrap(), 0).unwrap().macs());
}

#[test]
fn hidden_dense_layers_and_three_members_merge_too() {
    // The paper's net: conv, pool, conv, pool, hidden dense 64, dense 7.
    check_merge(preset("seed").unwrap(), &[3, 4, 5]);
    // The plain net: its hidden dense layer reads the shared input.
    check_merge(preset("mlp").unwrap(), &[6, 7]);
    // Logistic regression: the classifier itself reads the shared input.
    let linear = ModelSpec {
        name: "linear".into(),
        input: [1, 48, 48],
        layers: vec![LayerSpec::Flatten, LayerSpec::Dense { units: 7 }],
        classes: 7,
    };
    check_merge(linear, &[8, 9]);
}

/// The largest difference between two networks' tensors of the same name.
fn largest_tensor_difference(a: &Network, b: &Network) -> f32 {
    assert_eq!(a.spec(), b.spec());
    a.named_tensors()
        .into_iter()
        .zip(b.named_tensors())
        .flat_map(|((_, x), (_, y))| x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs()).collect::<Vec<_>>())
        .fold(0.0, f32::max)
}

#[test]
fn a_merged_member_counts_as_the_models_it_was_merged_from() {
    // deep-x2 + deep is deep-x3 with equal weights, as if the three had been merged at once.
    let deep: Vec<Network> = [1, 2, 3].map(|seed| trained_like(preset("deep").unwrap(), seed)).into();
    let at_once = merge(&deep).unwrap();
    let pair = merge(&deep[..2]).unwrap();
    let in_two_steps = merge(&[pair, trained_like(preset("deep").unwrap(), 3)]).unwrap();
    assert_eq!(in_two_steps.spec().name, "deep-x3");
    assert!(largest_tensor_difference(&at_once, &in_two_steps) < 1e-6);
    // Hidden dense layers: seed-x2 + seed-x2 is seed-x4, the blocks in member order.
    let seed: Vec<Network> = [4, 5, 6, 7].map(|seed| trained_like(preset("seed").unwrap(), seed)).into();
    let pairs = [merge(&seed[..2]).unwrap(), merge(&seed[2..]).unwrap()];
    let (at_once, in_two_steps) = (merge(&seed).unwrap(), merge(&pairs).unwrap());
    assert_eq!(in_two_steps.spec().name, "seed-x4");
    assert!(largest_tensor_difference(&at_once, &in_two_steps) < 1e-6);
}

#[test]
fn a_model_named_as_a_merge_must_be_one() {
    let mut spec = preset("deep").unwrap();
    spec.name = "deep-x2".into();
    let impostor = Network::new(spec, 1).unwrap();
    let message = merge(&[impostor, trained_like(preset("deep").unwrap(), 2)]).err().expect("refused").to_string();
    assert!(message.contains("'deep-x2' is named as a merge of 2 models but its layers are not one"), "{message}");
}

#[test]
fn a_merged_model_saves_and_loads_with_its_groups() {
    let members = [trained_like(preset("seed").unwrap(), 1), trained_like(preset("seed").unwrap(), 2)];
    let mut merged = merge(&members).unwrap();
    let bytes = save_model(&merged, StoredDtype::F32, &Default::default()).unwrap();
    let mut loaded = load_model(&bytes).unwrap().network;
    assert_eq!(loaded.spec(), merged.spec());
    assert_eq!(logits(&mut loaded), logits(&mut merged));
    // Ungrouped convolutions are written as before groups existed, so older readers and files agree.
    let ungrouped = serde_json::to_string(&preset("seed").unwrap().layers[0]).unwrap();
    assert!(!ungrouped.contains("groups"), "{ungrouped}");
    let old: LayerSpec = serde_json::from_str(r#"{"type":"conv2d","filters":8,"kernel":4,"stride":1,"padding":"same"}"#).unwrap();
    assert_eq!(old, LayerSpec::Conv2d { filters: 8, kernel: 4, stride: 1, padding: Padding::Same, groups: 1 });
}

#[test]
fn models_that_cannot_be_merged_are_refused_with_the_reason() {
    let error = |members: &[Network]| merge(members).err().expect("refused").to_string();
    let (seed, deep) = (trained_like(preset("seed").unwrap(), 1), trained_like(preset("deep").unwrap(), 1));
    assert!(error(&[seed, deep]).contains("only models of one architecture can be merged"));
    assert!(error(&[]).contains("at least one model"));
    // An all-convolutional classifier: its logits come out of a pooling layer, not a dense one.
    let pooled = ModelSpec {
        name: "pooled".into(),
        input: [1, 48, 48],
        layers: vec![LayerSpec::Conv2d { filters: 7, kernel: 3, stride: 1, padding: Padding::Same, groups: 1 }, LayerSpec::GlobalAvgPool],
        classes: 7,
    };
    let members = [Network::new(pooled.clone(), 1).unwrap(), Network::new(pooled, 2).unwrap()];
    assert!(error(&members).contains("last layer is dense"));
}

#[test]
fn groups_that_do_not_divide_the_channels_are_an_error() {
    let spec = ModelSpec {
        name: "odd".into(),
        input: [1, 48, 48],
        layers: vec![
            LayerSpec::Conv2d { filters: 4, kernel: 3, stride: 1, padding: Padding::Same, groups: 1 },
            LayerSpec::Conv2d { filters: 6, kernel: 3, stride: 1, padding: Padding::Same, groups: 3 },
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense { units: 7 },
        ],
        classes: 7,
    };
    let message = Network::new(spec, 1).err().expect("refused").to_string();
    assert!(message.contains("layer 1") && message.contains("3 groups do not divide 4 input channels"), "{message}");
}

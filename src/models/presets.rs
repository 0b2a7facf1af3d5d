//! Architectures by name. Every preset takes a 48x48x1 face and outputs 7 logits.

use crate::data::NUM_CLASSES;
use crate::engine::{LayerSpec, ModelSpec, Padding};
use crate::{FerError, Result};

/// Preset names with a one-line description, for the CLI's help and the page's menu.
pub const PRESETS: &[(&str, &str)] = &[
    ("seed", "the paper's CNN: conv 4x4x8 → pool → conv 2x2x16 → pool → dense 64 → 7"),
    ("mlp", "the paper's plain neural-net baseline: one hidden layer of 256"),
    ("deep", "VGG-style: 7 3x3 convs with batch-norm (32 to 256 filters), dropout, dense 7"),
    ("fast", "deep at a quarter of its multiply-adds, for the camera: 7 3x3 convs with batch-norm (16 to 128 filters)"),
    ("deeper", "deep with a third 128-filter conv and a second 256-filter conv: 9 convs, 1.3 M weights"),
];

fn conv(filters: usize, kernel: usize) -> LayerSpec {
    LayerSpec::Conv2d { filters, kernel, stride: 1, padding: Padding::Same, groups: 1 }
}

fn spec(name: &str, layers: Vec<LayerSpec>) -> ModelSpec {
    ModelSpec { name: name.into(), input: [1, 48, 48], layers, classes: NUM_CLASSES }
}

/// conv → batch-norm → ReLU
fn conv_bn_relu(filters: usize) -> [LayerSpec; 3] {
    [conv(filters, 3), LayerSpec::BatchNorm, LayerSpec::Relu]
}

/// Blocks of conv-BN-ReLU, each block followed by a 2x2 max-pool, then dropout and the classifier.
fn vgg(name: &str, blocks: &[&[usize]]) -> ModelSpec {
    let mut layers = Vec::new();
    for block in blocks {
        for &filters in *block {
            layers.extend(conv_bn_relu(filters));
        }
        layers.push(LayerSpec::MaxPool { window: 2, stride: 2 });
    }
    layers.extend([LayerSpec::Flatten, LayerSpec::Dropout { rate: 0.4 }, LayerSpec::Dense { units: NUM_CLASSES }]);
    spec(name, layers)
}

pub fn preset(name: &str) -> Result<ModelSpec> {
    use LayerSpec::*;
    Ok(match name {
        // The paper's table, layer for layer: 48x48x1 → 48x48x8 → 6x6x8 → 6x6x16 → 2x2x16 → 64 → 7.
        "seed" => spec(
            name,
            vec![
                conv(8, 4),
                Relu,
                MaxPool { window: 8, stride: 8 },
                conv(16, 2),
                Relu,
                MaxPool { window: 3, stride: 3 },
                Flatten,
                Dense { units: 64 },
                Relu,
                Dense { units: NUM_CLASSES },
            ],
        ),
        "mlp" => spec(name, vec![Flatten, Dense { units: 256 }, Relu, Dense { units: NUM_CLASSES }]),
        // VGG-style, the paper's future work: 3x3 convs with batch-norm, doubling the width at
        // each halving of the resolution. 48² ×32,32 → 24² ×64,64 → 12² ×128,128 → 6² ×256 → 3².
        "deep" => vgg(name, &[&[32, 32], &[64, 64], &[128, 128], &[256]]),
        // More depth where the maps are small, so it costs 1.4x deep's multiply-adds for 2.2x its
        // weights (int8 keeps them under 2 MB).
        "deeper" => vgg(name, &[&[32, 32], &[64, 64], &[128, 128, 128], &[256, 256]]),
        // deep's cheap end kept and its dear start cut: one conv at 48² and half the filters
        // everywhere, the width spent at 6² where a filter costs least. 24 M multiply-adds; the
        // last conv has 112 filters, the most that keep its int8 file under 300 KB.
        "fast" => vgg(name, &[&[16], &[32, 32], &[64, 64], &[128, 112]]),
        _ => {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(FerError::Config(format!("unknown preset '{name}'; choose one of: {}", names.join(", "))));
        }
    })
}

//! What a model file says about where it came from: how it was trained, on how many rows, how
//! well it did, what it was combined from. Stored as the safetensors header's string map (the
//! keys below), read back into one typed record; keys this version does not know are kept.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModelMetadata {
    /// The training options (a `TrainConfig`, as JSON) of the run that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs_completed: Option<usize>,
    /// Accuracies as measured on the weights as stored (after rounding, for f16 and int8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publictest_accuracy: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privatetest_accuracy: Option<f32>,
    /// The model distilled from, its views and weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// Training rows the batch-norm statistics were last measured on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_norm_recalibrated_on: Option<usize>,
    /// The files a merged or averaged model was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub averaged_from: Option<String>,
    /// What the logits are divided by before the softmax (temperature scaling, fitted on
    /// PublicTest by `fer temperature`); loading the file sets it on the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// A face whose largest probability is below this is shown as uncertain (chosen on
    /// PublicTest with the temperature applied: see `confidence::choose_uncertain_below`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertain_below: Option<f32>,
    /// Anything else in the header (a checkpoint's position, a user's own keys).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", flatten)]
    pub other: BTreeMap<String, String>,
}

impl ModelMetadata {
    /// Reads the header's map; a known key whose value does not parse is kept in `other`.
    pub fn from_map(map: HashMap<String, String>) -> ModelMetadata {
        let mut metadata = ModelMetadata::default();
        for (key, value) in map {
            let known = match key.as_str() {
                "training" => set(&mut metadata.training, serde_json::from_str(&value).ok()),
                "train_rows" => set(&mut metadata.train_rows, value.parse().ok()),
                "epochs_completed" => set(&mut metadata.epochs_completed, value.parse().ok()),
                "train_accuracy" => set(&mut metadata.train_accuracy, value.parse().ok()),
                "publictest_accuracy" => set(&mut metadata.publictest_accuracy, value.parse().ok()),
                "privatetest_accuracy" => set(&mut metadata.privatetest_accuracy, value.parse().ok()),
                "teacher" => set(&mut metadata.teacher, Some(value.clone())),
                // Older files say "28709 Training rows".
                "batch_norm_recalibrated_on" => {
                    set(&mut metadata.batch_norm_recalibrated_on, value.split_whitespace().next().and_then(|n| n.parse().ok()))
                }
                "merged_from" => set(&mut metadata.merged_from, Some(value.clone())),
                "averaged_from" => set(&mut metadata.averaged_from, Some(value.clone())),
                "temperature" => set(&mut metadata.temperature, value.parse().ok().filter(|t: &f32| t.is_finite() && *t > 0.0)),
                "uncertain_below" => set(&mut metadata.uncertain_below, value.parse().ok().filter(|p| (0.0..=1.0).contains(p))),
                _ => false,
            };
            if !known {
                metadata.other.insert(key, value);
            }
        }
        metadata
    }

    /// The header's map, for saving.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = self.other.clone().into_iter().collect();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                map.insert(key.to_string(), value);
            }
        };
        put("training", self.training.as_ref().map(|v| v.to_string()));
        put("train_rows", self.train_rows.map(|v| v.to_string()));
        put("epochs_completed", self.epochs_completed.map(|v| v.to_string()));
        put("train_accuracy", self.train_accuracy.map(|v| format!("{v:.4}")));
        put("publictest_accuracy", self.publictest_accuracy.map(|v| format!("{v:.4}")));
        put("privatetest_accuracy", self.privatetest_accuracy.map(|v| format!("{v:.4}")));
        put("teacher", self.teacher.clone());
        put("batch_norm_recalibrated_on", self.batch_norm_recalibrated_on.map(|v| v.to_string()));
        put("merged_from", self.merged_from.clone());
        put("averaged_from", self.averaged_from.clone());
        // Shortest decimals that read back as the same f32.
        put("temperature", self.temperature.map(|v| v.to_string()));
        put("uncertain_below", self.uncertain_below.map(|v| v.to_string()));
        map
    }

    /// Drops what was measured on the weights (accuracies, the temperature and the uncertain
    /// threshold), for a model whose weights or statistics just changed.
    pub fn forget_measurements(&mut self) {
        self.train_accuracy = None;
        self.publictest_accuracy = None;
        self.privatetest_accuracy = None;
        self.temperature = None;
        self.uncertain_below = None;
    }
}

/// Fills `slot` when `value` parsed; whether it did.
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let parsed = value.is_some();
    if parsed {
        *slot = value;
    }
    parsed
}

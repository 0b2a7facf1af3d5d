//! The WebAssembly API: thin handles over the library that keep the data in wasm memory.
//! JS pushes the CSV in chunks into a [`DatasetLoader`], gets a [`FaceDataset`], trains a
//! [`Training`] a few steps per call, and classifies faces with a [`Model`]. Results are plain
//! JS objects (serde-wasm-bindgen) or typed arrays; every failure is a JS `Error` with a
//! message for the user, never a panic.

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::data::input::{face_to_input, AugmentConfig};
use crate::data::{spread_evenly, Dataset, Fer2013Parser, ParseReport, Usage, FACE_PIXELS, NUM_CLASSES};
use crate::engine::network::batch_tensor;
use crate::engine::{LayerSpec, ModelSpec, Network, OptimizerKind};
use crate::inference::{evaluate, predict_faces, Tta};
use crate::models::onnx::import_onnx_with_external_data;
use crate::models::{export_onnx, load_any_model, preset, save_model, ModelMetadata, StoredDtype};
use crate::train::{presets_with_recipes, PresetInfo, Schedule, TrainConfig, SUGGESTED_PRESET};
use crate::FerError;

mod calibration;
mod camera;
mod quality;
mod training;
pub use calibration::Calibration;
pub use camera::{camera_layout, Camera};
pub use quality::{face_quality, quality_thresholds};
pub use training::Training;

/// `initThreadPool(n)` in the `threads` build: starts n Web Workers for rayon. Call it once, in
/// a worker (the page's main thread may not block), before anything trains or evaluates.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// The crate version.
#[wasm_bindgen]
pub fn version() -> String {
    crate::version().to_string()
}

/// What the page's training form offers, all of it from Rust.
#[derive(Serialize)]
struct TrainingOptions {
    /// `[{ name, description, recipe: { limit, config, tta } }]`, in menu order.
    presets: Vec<PresetInfo>,
    /// The preset the form starts on.
    suggested: &'static str,
    /// The optimiser each tag of `TrainConfig.optimizer.type` stands for, with its constants.
    optimizers: [OptimizerKind; 3],
    /// The schedule each tag of `TrainConfig.schedule.type` stands for.
    schedules: [Schedule; 2],
    /// The augmentation `TrainConfig.augment` holds when switched on.
    augment: AugmentConfig,
    /// The defaults of every option a recipe leaves alone.
    defaults: TrainConfig,
}

/// `{ presets, suggested, optimizers, schedules, augment, defaults }`: the presets with their suggested recipes and
/// the values the training form's choices stand for; the form edits a recipe's `config` and
/// passes it to `new Training`.
#[wasm_bindgen(js_name = trainingOptions)]
pub fn training_options() -> Result<JsValue, JsError> {
    to_js(&TrainingOptions {
        presets: presets_with_recipes(),
        suggested: SUGGESTED_PRESET,
        optimizers: [OptimizerKind::adam(), OptimizerKind::adamw(), OptimizerKind::sgd_nesterov()],
        schedules: [Schedule::Constant, Schedule::Cosine { warmup_epochs: 1 }],
        augment: AugmentConfig::default(),
        defaults: TrainConfig::default(),
    })
}

pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsError> {
    // Maps as plain objects, so JS reads `report.per_usage` rather than a `Map`; `None` as
    // `null`, so a recipe's `augment: null` is there to read and send back.
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true).serialize_missing_as_null(true);
    value.serialize(&serializer).map_err(|e| JsError::new(&e.to_string()))
}

pub(crate) fn js_error(error: FerError) -> JsError {
    JsError::new(&error.to_string())
}

pub(crate) fn parse_usage(name: &str) -> Result<Usage, JsError> {
    name.parse::<Usage>().map_err(js_error)
}

/// Streams a FER2013 CSV in: `push` each chunk as it arrives (any size, lines may be split),
/// then `finish`.
#[wasm_bindgen]
#[derive(Default)]
pub struct DatasetLoader {
    parser: Option<Fer2013Parser>,
}

#[wasm_bindgen]
impl DatasetLoader {
    #[wasm_bindgen(constructor)]
    pub fn new() -> DatasetLoader {
        DatasetLoader { parser: Some(Fer2013Parser::new()) }
    }

    fn parser(&mut self) -> Result<&mut Fer2013Parser, JsError> {
        self.parser.as_mut().ok_or_else(|| JsError::new("this loader has finished; create a new one"))
    }

    /// Optional: the expected size of the CSV text in bytes (for a `.gz`, about 3.3 times the
    /// file's size), so the faces' memory is taken once at the right size.
    #[wasm_bindgen(js_name = expectBytes)]
    pub fn expect_bytes(&mut self, csv_bytes: f64) -> Result<(), JsError> {
        if !(csv_bytes.is_finite() && csv_bytes >= 0.0) {
            return Err(JsError::new(&format!("expected size {csv_bytes} is not a number of bytes")));
        }
        self.parser()?.expect_bytes(csv_bytes as u64);
        Ok(())
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsError> {
        self.parser()?.push(chunk);
        Ok(())
    }

    /// Progress so far: `{ bytes_read, rows_ok, rows_bad, ... }` (the report's fields).
    pub fn progress(&mut self) -> Result<JsValue, JsError> {
        to_js(self.parser()?.report())
    }

    /// Ends the stream; fails when the file held no valid FER2013 row.
    pub fn finish(&mut self) -> Result<FaceDataset, JsError> {
        let parser = self.parser.take().ok_or_else(|| JsError::new("this loader has already finished"))?;
        let parsed = parser.finish().map_err(js_error)?;
        Ok(FaceDataset { data: parsed.dataset, report: parsed.report })
    }
}

/// The loaded faces (48x48 bytes each), labels and usages.
#[wasm_bindgen]
pub struct FaceDataset {
    pub(crate) data: Dataset,
    report: ParseReport,
}

#[wasm_bindgen]
impl FaceDataset {
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> usize {
        self.data.len()
    }

    /// The parse summary: rows per usage and class, bad rows with line numbers and reasons.
    pub fn report(&self) -> Result<JsValue, JsError> {
        to_js(&self.report)
    }

    fn check_row(&self, row: usize) -> Result<(), JsError> {
        if row >= self.data.len() {
            return Err(JsError::new(&format!("row {row} is past the end ({} rows)", self.data.len())));
        }
        Ok(())
    }

    /// Row `row`'s 48x48 grey pixels.
    pub fn face(&self, row: usize) -> Result<Vec<u8>, JsError> {
        self.check_row(row)?;
        Ok(self.data.face(row).to_vec())
    }

    pub fn label(&self, row: usize) -> Result<u8, JsError> {
        self.check_row(row)?;
        Ok(self.data.label(row))
    }

    pub fn usage(&self, row: usize) -> Result<String, JsError> {
        self.check_row(row)?;
        Ok(self.data.usage(row).name().to_string())
    }

    /// Row numbers with the given Usage (`Training`, `PublicTest`, `PrivateTest`), in file order.
    pub fn rows(&self, usage: &str) -> Result<Vec<u32>, JsError> {
        Ok(self.data.indices_of(parse_usage(usage)?).into_iter().map(|r| r as u32).collect())
    }

    /// The faces of `rows`, laid end to end (48x48 bytes each).
    pub fn faces(&self, rows: &[u32]) -> Result<Vec<u8>, JsError> {
        let mut faces = Vec::with_capacity(rows.len() * FACE_PIXELS);
        for &row in rows {
            self.check_row(row as usize)?;
            faces.extend_from_slice(self.data.face(row as usize));
        }
        Ok(faces)
    }

    /// Up to `per_class` rows of each emotion drawn at random from the whole file (a new draw
    /// for each `seed`): `[{ label, total, rows, usages }]`, one entry per class.
    #[wasm_bindgen(js_name = sampleByClass)]
    pub fn sample_by_class(&self, per_class: usize, seed: u64) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        struct ClassSample {
            label: usize,
            total: usize,
            rows: Vec<u32>,
            usages: Vec<&'static str>,
        }
        let mut rng = crate::engine::Rng::seed_from_u64(seed);
        let samples: Vec<ClassSample> = (0..NUM_CLASSES)
            .map(|label| {
                let all: Vec<u32> = (0..self.data.len()).filter(|&r| self.data.label(r) as usize == label).map(|r| r as u32).collect();
                let rows: Vec<u32> = all.choose_multiple(&mut rng, per_class).copied().collect();
                let usages = rows.iter().map(|&r| self.data.usage(r as usize).name()).collect();
                ClassSample { label, total: all.len(), rows, usages }
            })
            .collect();
        to_js(&samples)
    }

    /// `count` rows spread evenly over the PublicTest rows (the Training rows when there are
    /// none): the faces shown with their predictions after every epoch.
    #[wasm_bindgen(js_name = spreadRows)]
    pub fn spread_rows(&self, count: usize) -> Vec<u32> {
        let test = self.data.indices_of(Usage::PublicTest);
        let pool = if test.is_empty() { self.data.indices_of(Usage::Training) } else { test };
        spread_evenly(&pool, count).into_iter().map(|r| r as u32).collect()
    }
}

/// A classifier. Faces in, seven probabilities out (Angry, Disgust, Fear, Happy, Sad,
/// Surprise, Neutral).
#[wasm_bindgen]
pub struct Model {
    pub(crate) network: Network,
    metadata: ModelMetadata,
    stored: StoredDtype,
}

#[derive(Serialize)]
struct ModelDescription<'a> {
    spec: &'a ModelSpec,
    parameters: usize,
    macs: usize,
    metadata: &'a ModelMetadata,
}

#[derive(Serialize)]
struct LayerView {
    layer: LayerSpec,
    shape: Vec<usize>,
    values: Vec<f32>,
}

#[derive(Serialize)]
struct TensorView {
    shape: Vec<usize>,
    values: Vec<f32>,
}

#[wasm_bindgen]
impl Model {
    /// A freshly initialised preset (`seed`, `mlp`, `deep`).
    #[wasm_bindgen(js_name = fromPreset)]
    pub fn from_preset(name: &str, seed: u64) -> Result<Model, JsError> {
        let network = Network::new(preset(name).map_err(js_error)?, seed).map_err(js_error)?;
        Ok(Model { network, metadata: ModelMetadata::default(), stored: StoredDtype::F32 })
    }

    /// Loads a `.safetensors` or `.onnx` model file (told apart by content); the error says
    /// why a file does not load.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, JsError> {
        let loaded = load_any_model(bytes).map_err(js_error)?;
        Ok(Model { network: loaded.network, metadata: loaded.metadata, stored: loaded.stored })
    }

    /// Loads an ONNX graph whose weights are in a separate file, as PyTorch 2.x's exporter
    /// writes `NAME.onnx` and `NAME.onnx.data`: `graph` is the `.onnx` file's bytes, `dataName`
    /// the other file's name as the user picked it (`File.name`) and `data` its bytes. The
    /// graph must name that file as a plain file name beside it; the error says which file it
    /// wants when another was given.
    #[wasm_bindgen(js_name = fromOnnxFiles)]
    pub fn from_onnx_files(graph: &[u8], data_name: &str, data: &[u8]) -> Result<Model, JsError> {
        let mut read_file = |name: &str| {
            if name == data_name {
                Ok(Some(data.to_vec()))
            } else {
                Err(FerError::Model(format!(
                    "the graph keeps its weights in '{name}', but the file given with it is '{data_name}': select the \
                     graph and its '{name}' together"
                )))
            }
        };
        let loaded = import_onnx_with_external_data(graph, &mut read_file).map_err(js_error)?;
        Ok(Model { network: loaded.network, metadata: loaded.metadata, stored: loaded.stored })
    }

    /// The model as a `.safetensors` file with `precision` weights: `f32` (exact), `f16` (half
    /// the size) or `int8` (a quarter). Without training faces at hand the batch-norm
    /// statistics stay as they are; a model trained in the tab is exported by its `Training`,
    /// which re-measures them after rounding.
    #[wasm_bindgen(js_name = toBytes)]
    pub fn to_bytes(&self, precision: &str) -> Result<Vec<u8>, JsError> {
        let dtype = StoredDtype::from_name(precision).map_err(js_error)?;
        save_model(&self.network, dtype, &self.metadata).map_err(js_error)
    }

    /// The model as an ONNX file (opset 13): `pixels` `[N, 1, 48, 48]` (grey 0–255) in,
    /// `probabilities` `[N, 7]` out, with float32 weights (an int8 or f16 model's, dequantised).
    #[wasm_bindgen(js_name = toOnnx)]
    pub fn to_onnx(&self) -> Result<Vec<u8>, JsError> {
        export_onnx(&self.network, &self.metadata).map_err(js_error)
    }

    /// How the file this model came from stored its weights: `f32`, `f16` or `int8` (`f32` for
    /// a model made in the page).
    #[wasm_bindgen(js_name = storedPrecision)]
    pub fn stored_precision(&self) -> String {
        self.stored.name().into()
    }

    /// Classify in integer arithmetic: 8-bit weights times 16-bit activations in the
    /// convolutions, 2–3x faster in wasm; exact weights for an int8 file (see `engine::int8`).
    #[wasm_bindgen(js_name = setInt8Inference)]
    pub fn set_int8_inference(&mut self, on: bool) {
        self.network.set_int8_inference(on);
    }

    /// What the logits are divided by before the softmax, so that the probabilities match how
    /// often the model is right (fitted on PublicTest by `fer temperature`; 1 when the file has
    /// none). `predict`, `evaluate` and the camera already apply it.
    pub fn temperature(&self) -> f32 {
        self.network.temperature()
    }

    /// A face whose largest probability (with the temperature) is below this is uncertain:
    /// on PublicTest such faces were right less than half the time. `undefined` when the file
    /// has no threshold.
    #[wasm_bindgen(js_name = uncertainBelow)]
    pub fn uncertain_below(&self) -> Option<f32> {
        self.metadata.uncertain_below
    }

    /// `{ spec: { name, input, layers, classes }, parameters, macs, metadata }`
    pub fn describe(&self) -> Result<JsValue, JsError> {
        to_js(&ModelDescription {
            spec: self.network.spec(),
            parameters: self.network.parameter_count(),
            macs: self.network.macs(),
            metadata: &self.metadata,
        })
    }

    /// Probabilities for each face in `faces_u8` (48x48 bytes each, laid end to end):
    /// `n × 7` values. `tta` is `none`, `flip` or `flip_shift`.
    pub fn predict(&mut self, faces_u8: &[u8], tta: &str) -> Result<Vec<f32>, JsError> {
        if faces_u8.is_empty() || !faces_u8.len().is_multiple_of(FACE_PIXELS) {
            return Err(JsError::new(&format!("expected whole 48x48 faces ({FACE_PIXELS} bytes each), got {} bytes", faces_u8.len())));
        }
        let tta = parse_tta(tta)?;
        Ok(predict_faces(&mut self.network, faces_u8, tta).into_raw_vec_and_offset().0)
    }

    /// Each layer's output for one 48x48 face: `[{ layer, shape, values }]`, `shape` being
    /// `[c, h, w]` for images and `[features]` after flattening (the batch axis removed).
    pub fn inspect(&mut self, face_u8: &[u8]) -> Result<JsValue, JsError> {
        inspect_network(&mut self.network, face_u8)
    }

    /// The first convolution's filters: `{ shape: [filters, channels, k, k], values }`, or
    /// `null` when the model does not start with a convolution.
    pub fn filters(&self) -> Result<JsValue, JsError> {
        first_conv_filters(&self.network)
    }

    /// Accuracy, per-class accuracy and confusion matrix on the rows of one Usage.
    pub fn evaluate(&mut self, data: &FaceDataset, usage: &str, tta: &str) -> Result<JsValue, JsError> {
        let rows = data.data.indices_of(parse_usage(usage)?);
        if rows.is_empty() {
            return Err(JsError::new(&format!("the data has no {usage} rows")));
        }
        to_js(&evaluate(&mut self.network, &data.data, &rows, parse_tta(tta)?))
    }
}

/// [`Model::inspect`] for any network (the worker inspects the one it is training).
pub(crate) fn inspect_network(network: &mut Network, face_u8: &[u8]) -> Result<JsValue, JsError> {
    if face_u8.len() != FACE_PIXELS {
        return Err(JsError::new(&format!("expected one 48x48 face ({FACE_PIXELS} bytes), got {}", face_u8.len())));
    }
    let mut input = vec![0.0f32; FACE_PIXELS];
    face_to_input(face_u8, &mut input);
    let input = batch_tensor(network.spec().input, input).map_err(js_error)?;
    let outputs = network.layer_outputs(input);
    let views: Vec<LayerView> = network
        .spec()
        .layers
        .iter()
        .zip(outputs)
        .map(|(layer, output)| LayerView {
            layer: layer.clone(),
            shape: output.shape()[1..].to_vec(),
            values: output.iter().copied().collect(),
        })
        .collect();
    to_js(&views)
}

/// [`Model::filters`] for any network.
pub(crate) fn first_conv_filters(network: &Network) -> Result<JsValue, JsError> {
    match network.tensor("layers.0.weight") {
        Some(weight) if weight.ndim() == 4 => {
            to_js(&TensorView { shape: weight.shape().to_vec(), values: weight.iter().copied().collect() })
        }
        _ => Ok(JsValue::NULL),
    }
}

pub(crate) fn parse_tta(name: &str) -> Result<Tta, JsError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| JsError::new(&format!("test-time augmentation '{name}' is not none, flip or flip_shift")))
}

/// The side of the square faces every model reads, in pixels.
#[wasm_bindgen(js_name = faceSide)]
pub fn face_side() -> usize {
    crate::data::FACE_SIDE
}

/// The index of the largest value (the first of equals): a face's most likely class.
#[wasm_bindgen]
pub fn argmax(values: &[f32]) -> usize {
    crate::inference::argmax(ndarray::ArrayView1::from(values))
}

/// Probabilities from logits (the inside view's last layer).
#[wasm_bindgen]
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let logits = ndarray::ArrayView2::from_shape((1, logits.len()), logits).expect("one row");
    crate::engine::loss::softmax(logits).into_raw_vec_and_offset().0
}

/// Classes the models output, for the page's labels.
#[wasm_bindgen]
pub fn emotions() -> Vec<String> {
    crate::data::EMOTIONS[..NUM_CLASSES].iter().map(|e| e.to_string()).collect()
}

//! The command line: argument parsing and printing around the library's training and
//! evaluation functions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use fer_cnn::confidence::{fit_confidence, ThresholdSplit, NEAR};
use fer_cnn::data::input::AugmentConfig;
use fer_cnn::data::{read_fer2013_path, spread_evenly, Dataset, Parsed, Usage, EMOTIONS};
use fer_cnn::engine::parallel::on_pool;
use fer_cnn::engine::{Network, OptimizerKind};
use fer_cnn::inference::{evaluate, predict_faces, Tta};
use fer_cnn::models::onnx;
use fer_cnn::models::{
    as_stored, average, deepen, load_model, merge, preset, save_model, with_metadata, LoadedModel, ModelMetadata, StoredDtype, PRESETS,
};
use fer_cnn::train::{
    calibrate, calibrated_metadata, recalibrate_batch_norm, training_rows, CalibrationConfig, ReferenceRows, Schedule, Teacher,
    TrainConfig, Trainer, TrainingRun,
};
use fer_cnn::{FerError, Result};

#[derive(Parser)]
#[command(name = "fer", version, about = "Train and evaluate facial expression CNNs on FER2013")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on the file's Training rows; reports PublicTest accuracy after each epoch.
    Train(TrainArgs),
    /// Evaluate a model: accuracy, per-class accuracy and the confusion matrix.
    Eval(EvalArgs),
    /// Re-measure a model's batch-norm statistics on every Training row, un-augmented
    /// ("precise batch-norm"; `train` does it on 8,192 of them after every epoch).
    Recalibrate(RecalibrateArgs),
    /// Calibrate a model to one person: re-fit its classifier on their labelled captures (every
    /// row of the CSV, whatever its Usage, in capture order); prints the accuracy before and
    /// after on the last quarter of each expression's captures, kept out of the fit.
    Calibrate(CalibrateArgs),
    /// Fit a model's temperature (the logits are divided by it before the softmax, so that its
    /// probabilities match how often it is right) and the top probability below which a face
    /// is uncertain, on one Usage's rows; prints the calibration error before and after, and
    /// writes the model with both in its metadata (the weights' bytes unchanged).
    Temperature(TemperatureArgs),
    /// Merge models of one architecture into one network whose logits are the mean of theirs
    /// (an ensemble in one file, as fast as running the members one after another); a merged
    /// model counts as the models it holds, so members can be added one at a time.
    Merge(CombineArgs),
    /// Average the weights of models of one architecture that lie in one basin (one fine-tuned
    /// from another, or snapshots of one run): a model the size of one ("model soup"); re-measure
    /// its batch-norm statistics with `recalibrate` afterwards.
    Average(CombineArgs),
    /// Print speed figures: training faces/s (batch 64) and classify time per face, per preset
    /// or model file.
    Bench {
        /// Presets or .safetensors model files to measure (every preset when omitted)
        models: Vec<String>,
        /// Seconds to spend measuring each figure
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Describe a model file or preset: layers, parameters, multiply-adds.
    Info {
        /// A .safetensors model, or a preset name.
        model: String,
    },
    /// Write a model as ONNX (opset 13): `pixels` [N, 1, 48, 48] (grey 0-255) in, `probabilities`
    /// [N, 7] out, the input scaling and softmax inside the graph; int8 and f16 weights dequantised.
    Export(ExportArgs),
    /// Read an ONNX model made of the layers this engine has into a model file (.safetensors);
    /// weights kept in a separate file (PyTorch's NAME.onnx.data) are read from the graph's folder.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ExportArgs {
    /// A .safetensors model, or a preset name (its untrained weights)
    #[arg(long)]
    model: String,
    /// Where to write the ONNX model
    #[arg(long)]
    onnx: PathBuf,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The ONNX model to read (its external data files, if any, from the same folder)
    #[arg(long)]
    onnx: PathBuf,
    #[command(flatten)]
    precision: Precision,
    /// Where to write the model (.safetensors)
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Constant,
    Cosine,
}

#[derive(Clone, Copy, ValueEnum)]
enum TtaArg {
    None,
    Flip,
    FlipShift,
}

impl From<TtaArg> for Tta {
    fn from(arg: TtaArg) -> Tta {
        match arg {
            TtaArg::None => Tta::None,
            TtaArg::Flip => Tta::Flip,
            TtaArg::FlipShift => Tta::FlipShift,
        }
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// FER2013 CSV (.csv or .csv.gz)
    #[arg(long)]
    csv: PathBuf,
    /// Architecture [default: seed, or --init's]
    #[arg(long)]
    preset: Option<String>,
    /// Start from this model's weights instead of a fresh preset; with a deeper --preset, grow
    /// the model into it (its function unchanged: the added conv layers start as the identity)
    #[arg(long)]
    init: Option<PathBuf>,
    /// Train on the first N Training rows only (the paper used 6,000)
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerArg,
    /// SGD momentum (Nesterov)
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    #[arg(long, value_enum, default_value = "constant")]
    schedule: ScheduleArg,
    #[arg(long, default_value_t = 0)]
    warmup_epochs: usize,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Random shifts, rotations, zoom, flips and erasing
    #[arg(long)]
    augment: bool,
    /// With --augment: probability of blanking a random rectangle of each face
    #[arg(long, default_value_t = AugmentConfig::default().erase_probability)]
    erase: f32,
    /// Mixup Beta(α, α); 0 = off
    #[arg(long, default_value_t = 0.0)]
    mixup: f32,
    /// Weight classes by inverse frequency
    #[arg(long)]
    class_weights: bool,
    /// Sharpness-aware minimisation with this radius (e.g. 0.05); doubles the cost of a step
    #[arg(long, default_value_t = 0.0)]
    sam: f32,
    /// Test-time augmentation for the per-epoch PublicTest evaluation
    #[arg(long, value_enum, default_value = "none")]
    tta: TtaArg,
    /// Distil from this model: its probabilities for each training face (the plain softmax of
    /// its logits, whatever temperature its file gives) join the targets
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// With --teacher: the views the teacher averages over
    #[arg(long, value_enum, default_value = "flip-shift", requires = "teacher")]
    teacher_tta: TtaArg,
    /// With --teacher: the teacher's share of each target (the label keeps the rest)
    #[arg(long, default_value_t = 0.5, requires = "teacher")]
    distill: f32,
    #[command(flatten)]
    precision: Precision,
    /// Continue from the checkpoint written next to --out (OUT.ckpt) after every epoch
    #[arg(long)]
    resume: bool,
    /// Where to write the trained model (.safetensors)
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Model file; the default model (www/models/default.safetensors) when omitted
    #[arg(long)]
    model: Option<PathBuf>,
    /// FER2013 CSV (.csv or .csv.gz)
    #[arg(long)]
    csv: PathBuf,
    /// Only rows of this Usage (Training, PublicTest, PrivateTest); all rows when omitted
    #[arg(long)]
    usage: Option<Usage>,
    #[arg(long, value_enum, default_value = "none")]
    tta: TtaArg,
    /// Classify in integer arithmetic (8-bit weights times 16-bit activations), as the page's
    /// camera does for int8 model files
    #[arg(long)]
    int8_inference: bool,
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TemperatureArgs {
    /// Model file (.safetensors)
    #[arg(long)]
    model: PathBuf,
    /// FER2013 CSV (.csv or .csv.gz)
    #[arg(long)]
    csv: PathBuf,
    /// The rows to fit on (held out from training)
    #[arg(long, default_value = "PublicTest")]
    usage: Usage,
    /// Fit in integer arithmetic (8-bit weights times 16-bit activations), as the page's
    /// camera runs int8 model files
    #[arg(long)]
    int8_inference: bool,
    /// Where to write the model with its temperature (.safetensors; may be --model)
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct RecalibrateArgs {
    /// Model file (.safetensors) with batch-norm layers
    #[arg(long)]
    model: PathBuf,
    /// FER2013 CSV (.csv or .csv.gz) with Training rows
    #[arg(long)]
    csv: PathBuf,
    #[command(flatten)]
    precision: Precision,
    /// Where to write the recalibrated model (.safetensors)
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct CalibrateArgs {
    /// The person's captures in FER2013's format (.csv or .csv.gz), in the order taken
    #[arg(long)]
    csv: PathBuf,
    /// The model to calibrate (.safetensors; the page's default model when omitted)
    #[arg(long)]
    model: Option<PathBuf>,
    /// A FER2013 file: some of its Training rows are fitted too (so the model keeps working on
    /// other faces) and its PublicTest rows are scored before and after
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Training rows of --reference fitted alongside the captures
    #[arg(long, default_value_t = 1400)]
    replay: usize,
    /// How far batch-norm statistics move to the captures', 0 to 1 [default: the library's]
    #[arg(long)]
    adapt_batch_norm: Option<f32>,
    /// Pull towards the starting classifier, λ of λ‖W − W₀‖² [default: the library's]
    #[arg(long)]
    anchor: Option<f32>,
    /// Passes over the captures' cached features [default: the library's]
    #[arg(long)]
    epochs: Option<usize>,
    /// Store weights as f16 or int8 (--half, --int8); the model's own precision when neither
    #[command(flatten)]
    precision: Precision,
    /// Where to write the calibrated model (.safetensors)
    #[arg(long)]
    out: PathBuf,
}

/// How a written model stores its weights (f32 unless one of these is given).
#[derive(clap::Args)]
struct Precision {
    /// Store weights as f16 (half the size)
    #[arg(long)]
    half: bool,
    /// Store conv and dense weights as 8-bit integers with per-channel scales (a quarter the size)
    #[arg(long, conflicts_with = "half")]
    int8: bool,
}

impl Precision {
    fn dtype(&self) -> StoredDtype {
        match (self.half, self.int8) {
            (_, true) => StoredDtype::Int8,
            (true, false) => StoredDtype::F16,
            (false, false) => StoredDtype::F32,
        }
    }
}

#[derive(clap::Args)]
struct CombineArgs {
    /// The models (.safetensors), two or more: repeat --model
    #[arg(long = "model", required = true, num_args = 1)]
    models: Vec<PathBuf>,
    #[command(flatten)]
    precision: Precision,
    /// Where to write the result (.safetensors)
    #[arg(long)]
    out: PathBuf,
}

pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Recalibrate(args) => recalibrate(args),
        Command::Temperature(args) => fit_temperature(args),
        Command::Calibrate(args) => calibrate_model(args),
        Command::Merge(args) => merge_models(args),
        Command::Average(args) => average_models(args),
        Command::Bench { models, seconds } => bench(models, seconds),
        Command::Info { model } => info(&model),
        Command::Export(args) => export_onnx_file(args),
        Command::Import(args) => import_onnx_file(args),
    }
}

fn load_csv(path: &Path, quiet: bool) -> Result<Dataset> {
    let started = Instant::now();
    let size = std::fs::metadata(path).map_err(|e| FerError::Data(format!("cannot read {}: {e}", path.display())))?.len();
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(size) };
    bar.set_style(ProgressStyle::with_template("reading {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}").expect("valid template"));
    bar.set_message(path.display().to_string());
    let Parsed { dataset, report } = read_fer2013_path(path, |read| bar.set_position(read))?;
    bar.finish_and_clear();
    if !quiet {
        let usages: Vec<String> = Usage::ALL.iter().map(|u| format!("{} {}", u.name(), report.per_usage[u.index()])).collect();
        eprintln!(
            "read {} faces in {:.1}s ({}); {} bad rows",
            report.rows_ok,
            started.elapsed().as_secs_f32(),
            usages.join(", "),
            report.rows_bad
        );
        for bad in report.bad_rows.iter().take(5) {
            eprintln!("  line {}: {}", bad.line, bad.reason);
        }
    }
    Ok(dataset)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| FerError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    // Write then rename, so an interrupted run never leaves a truncated model or checkpoint.
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| FerError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))
}

fn train(args: TrainArgs) -> Result<()> {
    let data = load_csv(&args.csv, false)?;
    let train_rows = training_rows(&data, args.limit);
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        lr: args.lr,
        optimizer: match args.optimizer {
            OptimizerArg::Sgd => OptimizerKind::Sgd { momentum: args.momentum, nesterov: true },
            OptimizerArg::Adam => OptimizerKind::adam(),
            OptimizerArg::Adamw => OptimizerKind::adamw(),
        },
        weight_decay: args.weight_decay,
        schedule: match args.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Cosine => Schedule::Cosine { warmup_epochs: args.warmup_epochs },
        },
        label_smoothing: args.label_smoothing,
        augment: args.augment.then(|| AugmentConfig { erase_probability: args.erase, ..AugmentConfig::default() }),
        mixup_alpha: args.mixup,
        class_weights: args.class_weights,
        seed: args.seed,
        sam_rho: args.sam,
    };
    let tta: Tta = args.tta.into();
    let teacher = match &args.teacher {
        Some(path) => {
            let teacher = measure_teacher(path, &data, &train_rows, args.teacher_tta.into(), args.distill)?;
            let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
            Some((teacher, format!("{name} ({:?} views, weight {})", Tta::from(args.teacher_tta), args.distill)))
        }
        None => None,
    };
    let checkpoint_path = args.out.with_extension("ckpt");
    let mut run = if args.resume && checkpoint_path.exists() {
        let run = TrainingRun::resume(&read_file(&checkpoint_path)?, &data, args.limit, tta, Some(args.epochs), teacher)?;
        eprintln!("resumed {} after epoch {}", checkpoint_path.display(), run.epochs_completed());
        run
    } else {
        let network = match (&args.init, &args.preset) {
            (Some(path), None) => load_model(&read_file(path)?)?.network,
            (Some(path), Some(name)) => {
                let small = load_model(&read_file(path)?)?.network;
                let spec = preset(name)?;
                if *small.spec() == spec {
                    small
                } else {
                    eprintln!("growing '{}' into '{name}'", small.spec().name);
                    deepen(&small, spec, args.seed, |network| recalibrate_batch_norm(network, &data, &train_rows))?
                }
            }
            (None, name) => Network::new(preset(name.as_deref().unwrap_or("seed"))?, args.seed)?,
        };
        let run = TrainingRun::new(network, config, &data, args.limit, tta)?;
        match teacher {
            Some((teacher, description)) => run.distil_from(teacher, description)?,
            None => run,
        }
    };
    eprintln!(
        "training '{}' ({} parameters, {:.1} M multiply-adds per face) on {} faces, {} epochs",
        run.network().spec().name,
        run.network().parameter_count(),
        run.network().macs() as f64 / 1e6,
        run.train_rows().len(),
        run.config().epochs
    );
    while !run.is_finished() {
        let bar = ProgressBar::new(run.steps_per_epoch() as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}").expect("valid template"),
        );
        bar.set_prefix(format!("{}/{}", run.epochs_completed() + 1, run.config().epochs));
        let started = Instant::now();
        loop {
            let slice = run.train_slice(&data, 1);
            bar.set_message(format!("loss {:.4} lr {:.2e}", slice.loss, slice.lr));
            bar.inc(1);
            if slice.epoch_finished || slice.diverged.is_some() {
                break;
            }
        }
        bar.finish_and_clear();
        if let Some(divergence) = run.divergence() {
            let mut message = divergence.message.clone();
            if divergence.restored_epoch > 0 {
                let export = run.export(&data, args.precision.dtype())?;
                write_file(&args.out, &export.bytes)?;
                message += &format!(" The restored model is saved to {}.", args.out.display());
            }
            return Err(FerError::Training(message));
        }
        let seconds = started.elapsed().as_secs_f32();
        let report = run.end_epoch(&data);
        let mut line = format!(
            "epoch {}: loss {:.4}, train accuracy {:.2}%, {:.0} faces/s",
            report.epoch,
            report.train.loss,
            report.train.accuracy * 100.0,
            report.train.samples as f32 / seconds
        );
        if let Some(test) = &report.public_test {
            line += &format!(", PublicTest accuracy {:.2}% (loss {:.4})", test.accuracy * 100.0, test.loss);
        }
        println!("{line}");
        write_file(&checkpoint_path, &run.checkpoint()?)?;
    }

    let mut export = run.export(&data, args.precision.dtype())?;
    let train_eval = evaluate(&mut export.network, &data, run.train_rows(), Tta::None);
    println!("final: train accuracy {:.2}% (no augmentation, eval mode)", train_eval.accuracy * 100.0);
    if let Some(test) = &export.public_test {
        println!("final: PublicTest accuracy {:.2}% (weights as stored)", test.accuracy * 100.0);
    }
    write_file(&args.out, &export.bytes)?;
    eprintln!("saved {} ({} bytes)", args.out.display(), export.bytes.len());
    Ok(())
}

/// The teacher's probabilities for every training face, with a progress bar (10 views of
/// 28,709 faces take about 11 minutes on 2 cores).
fn measure_teacher(path: &Path, data: &Dataset, rows: &[usize], tta: Tta, weight: f32) -> Result<Teacher> {
    let mut network = load_model(&read_file(path)?)?.network;
    let started = Instant::now();
    let bar = ProgressBar::new(rows.len() as u64);
    bar.set_style(ProgressStyle::with_template("teacher {bar:30} {pos}/{len} faces ETA {eta}").expect("valid template"));
    let teacher = Teacher::measure(&mut network, data, rows, tta, weight, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    eprintln!(
        "teacher {}: probabilities for {} faces ({} views each) in {:.0}s",
        path.display(),
        rows.len(),
        tta.views(),
        started.elapsed().as_secs_f32()
    );
    Ok(teacher)
}

fn recalibrate(args: RecalibrateArgs) -> Result<()> {
    let LoadedModel { mut network, mut metadata, .. } = load_model(&read_file(&args.model)?)?;
    if !network.has_batch_norm() {
        return Err(FerError::Config(format!("{} has no batch-norm layers: there is nothing to recalibrate", args.model.display())));
    }
    let data = load_csv(&args.csv, false)?;
    let train_rows = data.indices_of(Usage::Training);
    if train_rows.is_empty() {
        return Err(FerError::Data(format!("{} has no Training rows to measure the statistics on", args.csv.display())));
    }
    let test_rows = data.indices_of(Usage::PublicTest);
    let publictest = |network: &mut Network| (!test_rows.is_empty()).then(|| evaluate(network, &data, &test_rows, Tta::None).accuracy);
    let before = publictest(&mut network);
    let dtype = args.precision.dtype();
    // Rounded weights shift every channel: statistics measured with them absorb the shift.
    let mut network = as_stored(&network, dtype)?;
    recalibrate_batch_norm(&mut network, &data, &train_rows);
    let mut network = as_stored(&network, dtype)?;
    let after = publictest(&mut network);
    eprintln!("batch-norm statistics measured on {} Training faces", train_rows.len());
    metadata.forget_measurements();
    metadata.batch_norm_recalibrated_on = Some(train_rows.len());
    if let (Some(before), Some(after)) = (before, after) {
        println!("PublicTest accuracy {:.2}% before, {:.2}% after", before * 100.0, after * 100.0);
        metadata.publictest_accuracy = Some(after);
    }
    let bytes = save_model(&network, dtype, &metadata)?;
    write_file(&args.out, &bytes)?;
    eprintln!("saved {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

fn fit_temperature(args: TemperatureArgs) -> Result<()> {
    let bytes = read_file(&args.model)?;
    let LoadedModel { mut network, mut metadata, .. } = load_model(&bytes)?;
    network.set_int8_inference(args.int8_inference);
    let data = load_csv(&args.csv, false)?;
    let rows = data.indices_of(args.usage);
    if rows.is_empty() {
        return Err(FerError::Data(format!("{} has no {} rows to fit the temperature on", args.csv.display(), args.usage.name())));
    }
    let fit = on_pool(|| fit_confidence(&mut network, &data, &rows));
    let arithmetic = if args.int8_inference { "integer" } else { "f32" };
    println!("{} {} faces, {arithmetic} arithmetic, accuracy {:.2}%", fit.after.n, args.usage.name(), fit.after.accuracy * 100.0);
    println!("temperature {}", fit.temperature);
    println!("{:<22} {:>8} {:>8}", "", "ECE", "NLL");
    println!("{:<22} {:>7.2}% {:>8.4}", "before (T = 1)", fit.before.ece * 100.0, fit.before.loss);
    println!("{:<22} {:>7.2}% {:>8.4}", format!("after (T = {:.4})", fit.temperature), fit.after.ece * 100.0, fit.after.loss);
    println!("threshold t  faces below  accuracy below  accuracy in [t-{NEAR}, t)  accuracy at or above");
    let printed = |s: &&ThresholdSplit| ((s.threshold * 100.0).round() as usize).is_multiple_of(5) && (0.3..=0.9).contains(&s.threshold);
    for split in fit.splits.iter().filter(printed) {
        println!(
            "{:>11.2} {:>11.1}% {:>14.1}% {:>24.1}% {:>21.1}%",
            split.threshold,
            split.below.n as f32 / fit.after.n as f32 * 100.0,
            split.below.accuracy * 100.0,
            split.just_below.accuracy * 100.0,
            split.at_or_above.accuracy * 100.0
        );
    }
    match fit.uncertain_split() {
        Some(split) => println!(
            "uncertain below {:.2} (the faces just below it right {:.1}% of the time): {} faces ({:.1}%) right {:.1}%; the other {} right {:.1}%",
            split.threshold,
            split.just_below.accuracy * 100.0,
            split.below.n,
            split.below.n as f32 / fit.after.n as f32 * 100.0,
            split.below.accuracy * 100.0,
            split.at_or_above.n,
            split.at_or_above.accuracy * 100.0
        ),
        None => println!("no faces are right less than half the time at any confidence: no uncertain threshold"),
    }
    metadata.temperature = Some(fit.temperature);
    metadata.uncertain_below = fit.uncertain_below;
    let bytes = with_metadata(&bytes, &metadata)?;
    write_file(&args.out, &bytes)?;
    eprintln!("saved {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

fn calibrate_model(args: CalibrateArgs) -> Result<()> {
    let model_path = args.model.clone().unwrap_or_else(default_model_path);
    let LoadedModel { network, metadata, stored } = load_model(&read_file(&model_path)?)?;
    let captures = load_csv(&args.csv, false)?;
    let reference = args.reference.as_deref().map(|path| load_csv(path, false)).transpose()?;
    let (replay, check) = match &reference {
        Some(data) => (spread_evenly(&data.indices_of(Usage::Training), args.replay), data.indices_of(Usage::PublicTest)),
        None => (Vec::new(), Vec::new()),
    };
    let reference_rows = reference.as_ref().map(|data| ReferenceRows { data, replay: &replay, check: &check });
    let defaults = CalibrationConfig::default();
    let config = CalibrationConfig {
        adapt_batch_norm: args.adapt_batch_norm.unwrap_or(defaults.adapt_batch_norm),
        anchor: args.anchor.unwrap_or(defaults.anchor),
        epochs: args.epochs.unwrap_or(defaults.epochs),
        ..defaults
    };
    let started = Instant::now();
    let (network, report) = calibrate(network, &captures, reference_rows, config.clone(), |_| {})?;
    eprintln!(
        "calibrated in {:.1}s: {} captures fitted ({} views each), {} held out",
        started.elapsed().as_secs_f32(),
        report.fitted.iter().sum::<usize>(),
        config.views,
        report.held_out.iter().sum::<usize>()
    );
    let percent = |accuracy: f32| format!("{:.2}%", accuracy * 100.0);
    match &report.held_out_accuracy {
        Some(scores) => println!(
            "held-out captures ({}): {} before, {} after ({} of them read by the calibrated weights)",
            scores.after.n,
            percent(scores.before.accuracy),
            percent(scores.after.accuracy),
            report.held_out_read_personally.map_or("none".into(), percent)
        ),
        None => println!("no held-out captures: every expression needs two or more captures to score the calibration"),
    }
    println!(
        "reference faces ({} ordinary faces shipped with fer): {} read by the calibrated weights, so at most {:.1} points lost on them",
        report.reference_faces.faces,
        percent(report.reference_faces.read_personally),
        report.reference_faces.read_personally * 100.0
    );
    if let Some(scores) = &report.reference_accuracy {
        println!(
            "PublicTest ({} faces): {} before, {} after",
            scores.after.n,
            percent(scores.before.accuracy),
            percent(scores.after.accuracy)
        );
    }
    if !report.verdict.accepted {
        return Err(FerError::Calibration(format!("{}; nothing written to {}", report.verdict.reason, args.out.display())));
    }
    println!("calibrated: {}", report.verdict.reason);
    let metadata = calibrated_metadata(metadata, &report);
    let dtype = if args.precision.half || args.precision.int8 { args.precision.dtype() } else { stored };
    let bytes = save_model(&network, dtype, &metadata)?;
    write_file(&args.out, &bytes)?;
    eprintln!("saved {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

/// Loads `args.models` (two or more), combines them with `combine` and saves the result with
/// `{verb}d_from` (the files' names) in its metadata; returns the result and its size in bytes.
fn combine_models(args: &CombineArgs, verb: &str, combine: fn(&[Network]) -> Result<Network>) -> Result<(Network, usize)> {
    if args.models.len() < 2 {
        return Err(FerError::Config(format!("give two or more models to {verb} (--model A --model B)")));
    }
    let models = args.models.iter().map(|path| Ok(load_model(&read_file(path)?)?.network)).collect::<Result<Vec<_>>>()?;
    let combined = combine(&models)?;
    let names = args.models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let metadata = match verb {
        "merge" => ModelMetadata { merged_from: Some(names), ..ModelMetadata::default() },
        _ => ModelMetadata { averaged_from: Some(names), ..ModelMetadata::default() },
    };
    let bytes = save_model(&combined, args.precision.dtype(), &metadata)?;
    write_file(&args.out, &bytes)?;
    Ok((combined, bytes.len()))
}

fn merge_models(args: CombineArgs) -> Result<()> {
    let (merged, size) = combine_models(&args, "merge", merge)?;
    eprintln!(
        "saved {} ({size} bytes): '{}', {} parameters, {:.1} M multiply-adds per face",
        args.out.display(),
        merged.spec().name,
        merged.parameter_count(),
        merged.macs() as f64 / 1e6
    );
    Ok(())
}

fn average_models(args: CombineArgs) -> Result<()> {
    let (averaged, size) = combine_models(&args, "average", average)?;
    eprintln!("saved {} ({size} bytes): the mean of {} '{}' models", args.out.display(), args.models.len(), averaged.spec().name);
    if averaged.has_batch_norm() {
        eprintln!("re-measure its batch-norm statistics: fer recalibrate --model {} --csv FER2013.csv --out ...", args.out.display());
    }
    Ok(())
}

fn default_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default.safetensors")
}

fn eval(args: EvalArgs) -> Result<()> {
    let model_path = args.model.unwrap_or_else(default_model_path);
    let mut network = load_model(&read_file(&model_path)?)?.network;
    network.set_int8_inference(args.int8_inference);
    let data = load_csv(&args.csv, args.json)?;
    let rows: Vec<usize> = match args.usage {
        Some(usage) => data.indices_of(usage),
        None => (0..data.len()).collect(),
    };
    if rows.is_empty() {
        return Err(FerError::Data(format!(
            "no rows to evaluate{}",
            args.usage.map_or(String::new(), |u| format!(" with Usage {}", u.name()))
        )));
    }
    let started = Instant::now();
    let result = evaluate(&mut network, &data, &rows, args.tta.into());
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let json = serde_json::json!({
            "accuracy": result.accuracy,
            "n": result.n,
            "per_class": result.per_class,
            "confusion": result.confusion,
        });
        println!("{json}");
        return Ok(());
    }
    println!("model {} ('{}'), {} faces", model_path.display(), network.spec().name, result.n);
    println!("accuracy {:.2}%  ({:.0} faces/s)", result.accuracy * 100.0, result.n as f64 / seconds);
    println!(
        "calibration error (ECE, 15 bins) {:.2}%, negative log-likelihood {:.4} (temperature {})",
        result.ece * 100.0,
        result.loss,
        network.temperature()
    );
    println!("{:>10} {:>7}   confusion (rows: true, columns: predicted)", "class", "acc");
    let header: Vec<String> = EMOTIONS.iter().map(|e| format!("{:>6}", &e[..e.len().min(5)])).collect();
    println!("{:>10} {:>7}   {}", "", "", header.join(""));
    for (k, name) in EMOTIONS.iter().enumerate() {
        let cells: Vec<String> = result.confusion[k].iter().map(|c| format!("{c:>6}")).collect();
        println!("{name:>10} {:>6.1}%   {}", result.per_class[k] * 100.0, cells.join(""));
    }
    Ok(())
}

/// A model file's network and metadata (.safetensors or .onnx), or a preset's freshly
/// initialised network.
fn model_or_preset(model: &str) -> Result<(Network, ModelMetadata)> {
    if Path::new(model).exists() {
        let path = Path::new(model);
        let loaded = onnx::load_any_model_with_external_data(&read_file(path)?, &mut files_beside(path))?;
        Ok((loaded.network, loaded.metadata))
    } else {
        let spec = preset(model)
            .map_err(|_| FerError::Config(format!("'{model}' is neither a model file nor a preset (presets: {})", preset_names())))?;
        Ok((Network::new(spec, 0)?, ModelMetadata::default()))
    }
}

fn info(model: &str) -> Result<()> {
    let (network, metadata) = model_or_preset(model)?;
    let spec = network.spec();
    println!("{}: input {:?}, {} classes", spec.name, spec.input, spec.classes);
    for (i, layer) in spec.layers.iter().enumerate() {
        println!("  {i:>2} {layer:?}");
    }
    println!("parameters: {}", network.parameter_count());
    println!("multiply-adds per face: {}", network.macs());
    if network.personal().is_some() {
        println!("calibrated to one person: faces that look like their captures go through the personal weights, the rest through the model's own");
    }
    let mut keys: Vec<_> = metadata.to_map().into_iter().collect();
    keys.sort();
    for (key, value) in keys {
        println!("{key}: {value}");
    }
    Ok(())
}

/// Repeats `work` for about `seconds` (after one warm-up call); returns calls per second.
fn calls_per_second(seconds: f64, mut work: impl FnMut()) -> f64 {
    work();
    let started = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || started.elapsed().as_secs_f64() < seconds {
        work();
        calls += 1;
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

/// Faces classified per second, one at a time on the thread pool, as the camera's pipeline
/// runs them (see `parallel::on_pool`).
fn classify_rate(network: &mut Network, face: &[u8], seconds: f64) -> f64 {
    calls_per_second(seconds, || {
        on_pool(|| predict_faces(network, face, Tta::None));
    })
}

fn bench(models: Vec<String>, seconds: f64) -> Result<()> {
    let names: Vec<String> = if models.is_empty() { PRESETS.iter().map(|(n, _)| n.to_string()).collect() } else { models };
    let threads = rayon::current_num_threads();
    let width = names.iter().map(String::len).max().unwrap_or(0).max("model".len());
    println!(
        "{:<width$} {:>12} {:>14} {:>16} {:>16} {:>16}",
        "model", "parameters", "M mult-adds", "train faces/s", "classify ms/face", "int8 ms/face"
    );
    for name in names {
        let (mut network, _) = model_or_preset(&name)?;
        // Random faces: speed does not depend on the pixel values.
        let mut data = Dataset::new();
        let mut state = 12345u32;
        for i in 0..256 {
            let face: Vec<u8> = (0..fer_cnn::data::FACE_PIXELS)
                .map(|_| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    (state >> 24) as u8
                })
                .collect();
            data.push(&face, (i % 7) as u8, Usage::Training)?;
        }
        let rows: Vec<usize> = (0..data.len()).collect();
        let config = TrainConfig { epochs: usize::MAX, batch_size: 64, augment: Some(AugmentConfig::default()), ..TrainConfig::default() };
        // Classify first: training changes the weights (a model file's int8 or f16 weights are
        // trained as f32, so the training figure is the same as for its preset).
        let face = data.face(0).to_vec();
        let f32_rate = classify_rate(&mut network, &face, seconds);
        network.set_int8_inference(true);
        let int8_rate = classify_rate(&mut network, &face, seconds);
        network.set_int8_inference(false);
        let (parameters, macs) = (network.parameter_count(), network.macs());
        let mut trainer = Trainer::new(network, config, &data, rows)?;
        let train_rate = calls_per_second(seconds, || {
            trainer.train_step(&data);
        }) * 64.0;
        println!(
            "{name:<width$} {parameters:>12} {:>14.1} {:>16.0} {:>16.3} {:>16.3}",
            macs as f64 / 1e6,
            train_rate,
            1000.0 / f32_rate,
            1000.0 / int8_rate
        );
    }
    println!("({threads} threads; classify is one face at a time, as the camera does)");
    Ok(())
}

fn export_onnx_file(args: ExportArgs) -> Result<()> {
    let (network, metadata) = model_or_preset(&args.model)?;
    let bytes = fer_cnn::models::export_onnx(&network, &metadata)?;
    write_file(&args.onnx, &bytes)?;
    eprintln!(
        "saved {} ({} bytes): '{}' as ONNX, opset {}",
        args.onnx.display(),
        bytes.len(),
        network.spec().name,
        fer_cnn::models::onnx::OPSET
    );
    Ok(())
}

/// Reads the external data files an ONNX graph at `graph` names (plain file names, checked by
/// the importer) from the graph's own folder.
fn files_beside(graph: &Path) -> impl FnMut(&str) -> Result<Option<Vec<u8>>> {
    let folder = graph.parent().unwrap_or(Path::new("")).to_path_buf();
    move |name| {
        let path = folder.join(name);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FerError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))),
            Ok(m) if m.len() > onnx::MAX_ONNX_BYTES as u64 => Err(FerError::Model(format!(
                "{}: the external data file is {} bytes; at most {} are read",
                path.display(),
                m.len(),
                onnx::MAX_ONNX_BYTES
            ))),
            Ok(_) => read_file(&path).map(Some),
        }
    }
}

fn import_onnx_file(args: ImportArgs) -> Result<()> {
    let LoadedModel { network, metadata, .. } =
        onnx::import_onnx_with_external_data(&read_file(&args.onnx)?, &mut files_beside(&args.onnx))?;
    let bytes = save_model(&network, args.precision.dtype(), &metadata)?;
    write_file(&args.out, &bytes)?;
    eprintln!(
        "saved {} ({} bytes): '{}', {} layers, {} parameters",
        args.out.display(),
        bytes.len(),
        network.spec().name,
        network.spec().layers.len(),
        network.parameter_count()
    );
    Ok(())
}

fn preset_names() -> String {
    PRESETS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

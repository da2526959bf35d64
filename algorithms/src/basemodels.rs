//! Built-in `basemodel` modules: an MLP and a LeNet-like CNN, trained with candle-nn on CPU.

use std::time::Instant;

use candle_core::Device;
use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::hp::{HpKind, HpSpec, Hyperparameters};
use ianvs_paradigms::modules::{BaseModel, BuildContext, TrainReport, WorkContext};
use serde_json::json;

use crate::classifiers::{Architecture, Classifier, OptimizerKind, TrainConfig};

/// Training hyperparameters shared by every built-in classifier.
pub fn training_hps(epochs: i64) -> Vec<HpSpec> {
    vec![
        HpSpec::new(
            "epochs",
            HpKind::Int {
                min: 1,
                max: 10_000,
            },
            json!(epochs),
            "passes over the training data",
        ),
        HpSpec::new(
            "learning_rate",
            HpKind::Float {
                min: 1e-8,
                max: 10.0,
            },
            json!(0.001),
            "optimizer step size",
        ),
        HpSpec::new(
            "batch_size",
            HpKind::Int {
                min: 1,
                max: 1_000_000,
            },
            json!(64),
            "samples per optimizer step",
        ),
        HpSpec::new(
            "optimizer",
            HpKind::Choice(&["adam", "adamw", "sgd"]),
            json!("adam"),
            "adam, adamw (decoupled weight decay) or sgd (with momentum)",
        ),
        HpSpec::new(
            "momentum",
            HpKind::Float {
                min: 0.0,
                max: 0.999,
            },
            json!(0.9),
            "SGD momentum (sgd only)",
        ),
        HpSpec::new(
            "weight_decay",
            HpKind::Float { min: 0.0, max: 1.0 },
            json!(0.01),
            "AdamW weight decay (adamw only)",
        ),
        HpSpec::new(
            "seed",
            HpKind::Int {
                min: 0,
                max: i64::MAX,
            },
            None,
            "seeds weight initialisation and shuffling (default: the job seed, `ianvs run --seed`)",
        ),
    ]
}

pub fn mlp_hps() -> Vec<HpSpec> {
    let mut v = vec![HpSpec::new(
        "hidden_sizes",
        HpKind::IntList {
            min: 1,
            max: 65_536,
        },
        json!([128]),
        "widths of the hidden layers, e.g. [256, 128]; [] is logistic regression",
    )];
    v.extend(training_hps(5));
    v
}

pub fn cnn_hps() -> Vec<HpSpec> {
    let mut v = vec![
        HpSpec::new(
            "conv1_channels",
            HpKind::Int { min: 1, max: 1024 },
            json!(6),
            "filters of the first 5x5 convolution",
        ),
        HpSpec::new(
            "conv2_channels",
            HpKind::Int { min: 1, max: 1024 },
            json!(16),
            "filters of the second 5x5 convolution",
        ),
        HpSpec::new(
            "fc_hidden",
            HpKind::Int {
                min: 1,
                max: 65_536,
            },
            json!(120),
            "width of the fully connected hidden layer",
        ),
    ];
    v.extend(training_hps(5));
    v
}

/// Reads the shared training hyperparameters.
pub fn train_config(hps: &Hyperparameters) -> anyhow::Result<TrainConfig> {
    let optimizer = match hps.str("optimizer")? {
        "sgd" => OptimizerKind::Sgd {
            momentum: hps.float("momentum")?,
        },
        "adamw" => OptimizerKind::AdamW {
            weight_decay: hps.float("weight_decay")?,
        },
        _ => OptimizerKind::Adam,
    };
    Ok(TrainConfig {
        epochs: hps.usize("epochs")?,
        learning_rate: hps.float("learning_rate")?,
        batch_size: hps.usize("batch_size")?,
        optimizer,
        seed: hps.u64("seed")?,
    })
}

/// A [`Classifier`] as a `basemodel` module.
pub struct ClassifierModel {
    pub model: Classifier,
    pub train: TrainConfig,
}

impl ClassifierModel {
    pub fn build(
        arch: Architecture,
        hps: &Hyperparameters,
        ctx: &BuildContext,
    ) -> anyhow::Result<Self> {
        let train = train_config(hps)?;
        let model = Classifier::new(
            arch,
            ctx.input_shape,
            ctx.num_classes,
            train.seed,
            &Device::Cpu,
        )?;
        Ok(Self { model, train })
    }
}

pub fn build_mlp(hps: &Hyperparameters, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    let hidden = hps
        .int_list("hidden_sizes")?
        .into_iter()
        .map(|h| h as usize)
        .collect();
    Ok(Box::new(ClassifierModel::build(
        Architecture::Mlp { hidden },
        hps,
        ctx,
    )?))
}

pub fn build_cnn(hps: &Hyperparameters, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    let (_, h, w) = ctx.input_shape;
    if h < 12 || w < 12 {
        anyhow::bail!("the CNN needs image inputs of at least 12x12 pixels, but samples are {:?} (set `testenv.dataset.shape` for image data)", ctx.input_shape);
    }
    let arch = Architecture::Cnn {
        conv_channels: (hps.usize("conv1_channels")?, hps.usize("conv2_channels")?),
        fc_hidden: hps.usize("fc_hidden")?,
    };
    Ok(Box::new(ClassifierModel::build(arch, hps, ctx)?))
}

impl BaseModel for ClassifierModel {
    fn train(&mut self, data: &Dataset, work: &WorkContext) -> anyhow::Result<TrainReport> {
        let n = data.len() as u64;
        let epochs = self.train.epochs as u64;
        work.progress.set_length(n * epochs);
        work.progress.set_position(0);
        let pb = work.progress;
        let done_epochs = std::cell::Cell::new(0u64);
        let t0 = Instant::now();
        let stats = self.model.train(
            &data.features,
            &data.labels,
            &self.train,
            &mut |done, _total| {
                pb.set_position(done_epochs.get() * n + done as u64);
                !work.cancel.load(std::sync::atomic::Ordering::Relaxed)
            },
            &mut |e| {
                done_epochs.set(e.epoch as u64);
                pb.set_message(format!("epoch {}/{} loss {:.4}", e.epoch, epochs, e.loss));
            },
        )?;
        work.check_cancelled()?;
        Ok(TrainReport {
            seconds: t0.elapsed().as_secs_f64(),
            final_loss: stats.epochs.last().map_or(f64::NAN, |e| e.loss),
            epochs: stats.epochs.len(),
        })
    }

    fn predict_proba(&self, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        Ok(self.model.predict_proba(x)?)
    }

    fn num_classes(&self) -> usize {
        self.model.num_classes()
    }

    fn num_parameters(&self) -> usize {
        self.model.num_parameters()
    }
}

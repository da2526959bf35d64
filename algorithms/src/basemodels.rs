//! Built-in `basemodel` modules: an MLP and a LeNet-like CNN, trained with candle-nn on CPU.

use std::time::Instant;

use candle_core::Device;
use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::hp::HpKind;
use ianvs_paradigms::modules::{BaseModel, BuildContext, TrainReport, WorkContext};
use serde_json::json;

use crate::classifiers::{Architecture, Classifier, OptimizerKind, TrainConfig};

ianvs_paradigms::hyperparameters! {
    /// Training hyperparameters shared by every built-in classifier.
    #[derive(Debug, Clone, PartialEq)]
    pub struct TrainingHps {
        pub epochs: usize {
            kind: HpKind::Int { min: 1, max: 10_000 },
            default: 5,
            help: "passes over the training data",
        },
        pub learning_rate: f64 {
            kind: HpKind::Float { min: 1e-8, max: 10.0 },
            default: 0.001,
            help: "optimizer step size",
        },
        pub batch_size: usize {
            kind: HpKind::Int { min: 1, max: 1_000_000 },
            default: 64,
            help: "samples per optimizer step",
        },
        pub optimizer: String {
            kind: HpKind::Choice(&["adam", "adamw", "sgd"]),
            default: "adam",
            help: "adam, adamw (decoupled weight decay) or sgd (with momentum)",
        },
        pub momentum: f64 {
            kind: HpKind::Float { min: 0.0, max: 0.999 },
            default: 0.9,
            help: "SGD momentum (sgd only)",
        },
        pub weight_decay: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.01,
            help: "AdamW weight decay (adamw only)",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds weight initialisation and shuffling (default: the job seed, `ianvs run --seed`)",
        },
    }
}

impl TrainingHps {
    /// The classifier's training configuration.
    pub fn config(&self) -> TrainConfig {
        let optimizer = match self.optimizer.as_str() {
            "sgd" => OptimizerKind::Sgd {
                momentum: self.momentum,
            },
            "adamw" => OptimizerKind::AdamW {
                weight_decay: self.weight_decay,
            },
            _ => OptimizerKind::Adam,
        };
        TrainConfig {
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            batch_size: self.batch_size,
            optimizer,
            seed: self.seed,
        }
    }
}

ianvs_paradigms::hyperparameters! {
    /// The `MLP` base model's hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct MlpHps {
        pub hidden_sizes: Vec<usize> {
            kind: HpKind::IntList { min: 1, max: 65_536 },
            default: json!([128]),
            help: "widths of the hidden layers, e.g. [256, 128]; [] is logistic regression",
        },
        pub training: TrainingHps { flatten },
    }
}

impl MlpHps {
    pub fn architecture(&self) -> Architecture {
        Architecture::Mlp {
            hidden: self.hidden_sizes.clone(),
        }
    }
}

ianvs_paradigms::hyperparameters! {
    /// The `CNN` base model's hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct CnnHps {
        pub conv1_channels: usize {
            kind: HpKind::Int { min: 1, max: 1024 },
            default: 6,
            help: "filters of the first 5x5 convolution",
        },
        pub conv2_channels: usize {
            kind: HpKind::Int { min: 1, max: 1024 },
            default: 16,
            help: "filters of the second 5x5 convolution",
        },
        pub fc_hidden: usize {
            kind: HpKind::Int { min: 1, max: 65_536 },
            default: 120,
            help: "width of the fully connected hidden layer",
        },
        pub training: TrainingHps { flatten },
    }
}

impl CnnHps {
    pub fn architecture(&self) -> Architecture {
        Architecture::Cnn {
            conv_channels: (self.conv1_channels, self.conv2_channels),
            fc_hidden: self.fc_hidden,
        }
    }
}

/// A [`Classifier`] as a `basemodel` module.
pub struct ClassifierModel {
    pub model: Classifier,
    pub train: TrainConfig,
}

impl ClassifierModel {
    pub fn build(
        arch: Architecture,
        training: &TrainingHps,
        ctx: &BuildContext,
    ) -> anyhow::Result<Self> {
        let train = training.config();
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

pub fn build_mlp(h: MlpHps, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    Ok(Box::new(ClassifierModel::build(
        h.architecture(),
        &h.training,
        ctx,
    )?))
}

pub fn build_cnn(h: CnnHps, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    check_cnn_input(ctx)?;
    Ok(Box::new(ClassifierModel::build(
        h.architecture(),
        &h.training,
        ctx,
    )?))
}

/// The CNN's two 5x5 convolutions and pools need images of at least 12x12 pixels.
pub fn check_cnn_input(ctx: &BuildContext) -> anyhow::Result<()> {
    let (_, h, w) = ctx.input_shape;
    if h < 12 || w < 12 {
        anyhow::bail!("the CNN needs image inputs of at least 12x12 pixels, but samples are {:?} (set `testenv.dataset.shape` for image data)", ctx.input_shape);
    }
    Ok(())
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

//! The built-in `edgemodel` and `cloudmodel` modules of joint inference: the same MLP and CNN
//! as the `basemodel`s (same hyperparameters, same seeded training), each placed on the device
//! its `device` hyperparameter names.

use ianvs_paradigms::device::{device_hp, select_device, DEVICE_NAMES};
use ianvs_paradigms::hp::HpKind;
use ianvs_paradigms::modules::{BaseModel, BuildContext};

use crate::basemodels::{ClassifierModel, CnnHps, MlpHps, TrainingHps};
use crate::classifiers::{Architecture, Classifier};

ianvs_paradigms::hyperparameters! {
    /// The `MLP` edge or cloud model: the `MLP` base model's hyperparameters and a device.
    #[derive(Debug, Clone, PartialEq)]
    pub struct MlpRoleHps {
        pub model: MlpHps { flatten },
        pub device: String {
            kind: HpKind::Choice(DEVICE_NAMES),
            default: "cpu",
            help: device_hp().help,
        },
    }
}

ianvs_paradigms::hyperparameters! {
    /// The `CNN` edge or cloud model: the `CNN` base model's hyperparameters and a device.
    #[derive(Debug, Clone, PartialEq)]
    pub struct CnnRoleHps {
        pub model: CnnHps { flatten },
        pub device: String {
            kind: HpKind::Choice(DEVICE_NAMES),
            default: "cpu",
            help: device_hp().help,
        },
    }
}

fn build_on_device(
    arch: Architecture,
    training: &TrainingHps,
    device: &str,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn BaseModel>> {
    let device = select_device(device);
    let train = training.config();
    let model = Classifier::new(
        arch,
        ctx.input_shape,
        ctx.num_classes,
        train.seed,
        &device.device,
    )?;
    Ok(Box::new(ClassifierModel { model, train }))
}

pub fn build_mlp(h: MlpRoleHps, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    build_on_device(h.model.architecture(), &h.model.training, &h.device, ctx)
}

pub fn build_cnn(h: CnnRoleHps, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    build_on_device(h.model.architecture(), &h.model.training, &h.device, ctx)
}

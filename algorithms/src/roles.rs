//! The built-in `edgemodel` and `cloudmodel` modules of joint inference: the same MLP and CNN
//! as the `basemodel`s (same hyperparameters, same seeded training), each placed on the device
//! its `device` hyperparameter names.

use ianvs_paradigms::device::{device_hp, select_device};
use ianvs_paradigms::hp::{HpSpec, Hyperparameters};
use ianvs_paradigms::modules::{BaseModel, BuildContext};

use crate::basemodels::{cnn_hps, mlp_hps, train_config, ClassifierModel};
use crate::classifiers::{Architecture, Classifier};

pub fn mlp_role_hps() -> Vec<HpSpec> {
    let mut v = mlp_hps();
    v.push(device_hp());
    v
}

pub fn cnn_role_hps() -> Vec<HpSpec> {
    let mut v = cnn_hps();
    v.push(device_hp());
    v
}

fn build_on_device(
    arch: Architecture,
    h: &Hyperparameters,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn BaseModel>> {
    let device = select_device(h.str("device")?);
    let train = train_config(h)?;
    let model = Classifier::new(
        arch,
        ctx.input_shape,
        ctx.num_classes,
        train.seed,
        &device.device,
    )?;
    Ok(Box::new(ClassifierModel { model, train }))
}

pub fn build_mlp(h: &Hyperparameters, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    let hidden = h
        .int_list("hidden_sizes")?
        .into_iter()
        .map(|w| w as usize)
        .collect();
    build_on_device(Architecture::Mlp { hidden }, h, ctx)
}

pub fn build_cnn(h: &Hyperparameters, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    let arch = Architecture::Cnn {
        conv_channels: (h.usize("conv1_channels")?, h.usize("conv2_channels")?),
        fc_hidden: h.usize("fc_hidden")?,
    };
    build_on_device(arch, h, ctx)
}

//! The optimisers behind [`super::OptimizerKind`]: SGD with momentum (candle-nn's `SGD` has no
//! momentum) and candle-nn's `AdamW` (Adam is AdamW with no weight decay).

use super::{ClassifierError, OptimizerKind, Result, TrainConfig};
use candle_core::{backprop::GradStore, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW};

pub(crate) enum Optimizer {
    Sgd {
        vars: Vec<Var>,
        /// Momentum buffers, created on the first step a variable gets a gradient.
        velocity: Vec<Option<Tensor>>,
        lr: f64,
        momentum: f64,
    },
    AdamW(AdamW),
}

impl Optimizer {
    pub(crate) fn new(vars: Vec<Var>, cfg: &TrainConfig) -> Result<Self> {
        let lr = cfg.learning_rate;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(ClassifierError::InvalidTrainConfig(format!(
                "learning_rate must be a positive number, got {lr}"
            )));
        }
        Ok(match &cfg.optimizer {
            OptimizerKind::Sgd { momentum } => {
                if !(0.0..1.0).contains(momentum) {
                    return Err(ClassifierError::InvalidTrainConfig(format!(
                        "SGD momentum must be in [0, 1), got {momentum}"
                    )));
                }
                Optimizer::Sgd {
                    velocity: vec![None; vars.len()],
                    vars,
                    lr,
                    momentum: *momentum,
                }
            }
            OptimizerKind::Adam => Optimizer::AdamW(AdamW::new(vars, adam_params(lr, 0.0))?),
            OptimizerKind::AdamW { weight_decay } => {
                if !(weight_decay.is_finite() && *weight_decay >= 0.0) {
                    return Err(ClassifierError::InvalidTrainConfig(format!(
                        "AdamW weight_decay must be a non-negative number, got {weight_decay}"
                    )));
                }
                Optimizer::AdamW(AdamW::new(vars, adam_params(lr, *weight_decay))?)
            }
        })
    }

    pub(crate) fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Optimizer::Sgd {
                vars,
                velocity,
                lr,
                momentum,
            } => {
                for (var, v) in vars.iter().zip(velocity.iter_mut()) {
                    let Some(g) = grads.get(var) else { continue };
                    let update = if *momentum > 0.0 {
                        let next = match v.take() {
                            Some(prev) => ((prev * *momentum)? + g)?,
                            None => g.copy()?,
                        };
                        *v = Some(next.clone());
                        next
                    } else {
                        g.clone()
                    };
                    var.set(&var.as_tensor().sub(&(update * *lr)?)?)?;
                }
                Ok(())
            }
            Optimizer::AdamW(adam) => Ok(adam.step(grads)?),
        }
    }
}

fn adam_params(lr: f64, weight_decay: f64) -> ParamsAdamW {
    ParamsAdamW {
        lr,
        weight_decay,
        ..ParamsAdamW::default()
    }
}

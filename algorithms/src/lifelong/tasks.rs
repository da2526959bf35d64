//! Task definitions (module type `task_definition`) on real data: Split (Split-MNIST: disjoint
//! groups of classes, Zenke et al. 2017), Permuted (one fixed, seeded pixel permutation per task,
//! Goodfellow et al. 2013) and Rotated (one rotation angle per task, Lopez-Paz & Ranzato 2017).

use std::collections::BTreeSet;

use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::hp::HpKind;
use ianvs_paradigms::lifelong::{TaskDefinition, TaskSpec};
use ianvs_paradigms::modules::BuildContext;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

// ---- Split ----------------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `Split`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct SplitHps {
        pub classes_per_task: usize {
            kind: HpKind::Int { min: 1, max: 100_000 },
            default: 2,
            help: "classes in each task (Split-MNIST: 2, digits 0-1, 2-3, …)",
        },
        pub num_tasks: usize {
            kind: HpKind::Int { min: 0, max: 100_000 },
            default: 0,
            help: "tasks to define (0: as many as the classes fill)",
        },
        pub class_order: Vec<i64> {
            kind: HpKind::IntList { min: 0, max: u32::MAX as i64 },
            default: json!([]),
            help: "the order classes are dealt into tasks ([]: 0, 1, 2, …)",
        },
    }
}

/// Split: task `k` holds the samples of classes `order[k·c .. (k+1)·c]`.
pub struct Split {
    classes_per_task: usize,
    num_tasks: usize,
    order: Vec<u32>,
}

pub fn build_split(hps: SplitHps, ctx: &BuildContext) -> anyhow::Result<Box<dyn TaskDefinition>> {
    let order: Vec<u32> = match hps.class_order {
        v if v.is_empty() => (0..ctx.num_classes as u32).collect(),
        v => v.into_iter().map(|c| c as u32).collect(),
    };
    let mut seen = BTreeSet::new();
    if let Some(d) = order.iter().find(|c| !seen.insert(**c)) {
        anyhow::bail!("`class_order` lists class {d} twice; each class belongs to one task");
    }
    Ok(Box::new(Split {
        classes_per_task: hps.classes_per_task,
        num_tasks: hps.num_tasks,
        order,
    }))
}

impl TaskDefinition for Split {
    fn tasks(&self, train: &Dataset, test: &Dataset) -> anyhow::Result<Vec<TaskSpec>> {
        let c = self.classes_per_task;
        let n = if self.num_tasks == 0 {
            self.order.len().div_ceil(c)
        } else {
            self.num_tasks
        };
        Ok((0..n)
            .map(|k| {
                let classes: Vec<u32> = self.order.iter().skip(k * c).take(c).copied().collect();
                let pick = |d: &Dataset| {
                    d.labels
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| classes.contains(l))
                        .map(|(i, _)| i)
                        .collect()
                };
                let name = if classes.is_empty() {
                    "no classes left".to_string()
                } else {
                    format!(
                        "classes {}",
                        classes
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join("+")
                    )
                };
                TaskSpec {
                    name,
                    train: pick(train),
                    test: pick(test),
                    classes,
                }
            })
            .collect())
    }
}

// ---- Permuted -------------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `Permuted`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct PermutedHps {
        pub num_tasks: usize {
            kind: HpKind::Int { min: 1, max: 1000 },
            default: 5,
            help: "tasks, each every sample under its own pixel permutation",
        },
        pub first_identity: bool {
            kind: HpKind::Bool,
            default: true,
            help: "task 1 sees the original pixels (the usual Permuted-MNIST protocol)",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds the permutations (default: the job seed)",
        },
    }
}

/// Permuted: every task holds every sample, its features shuffled by a fixed permutation.
pub struct Permuted {
    perms: Vec<Vec<usize>>,
}

pub fn build_permuted(
    hps: PermutedHps,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn TaskDefinition>> {
    let (c, h, w) = ctx.input_shape;
    let dim = c * h * w;
    let mut rng = ChaCha8Rng::seed_from_u64(hps.seed);
    let first_identity = hps.first_identity;
    let perms = (0..hps.num_tasks)
        .map(|k| {
            let mut p: Vec<usize> = (0..dim).collect();
            if k > 0 || !first_identity {
                p.shuffle(&mut rng);
            }
            p
        })
        .collect();
    Ok(Box::new(Permuted { perms }))
}

impl TaskDefinition for Permuted {
    fn tasks(&self, train: &Dataset, test: &Dataset) -> anyhow::Result<Vec<TaskSpec>> {
        Ok((0..self.perms.len())
            .map(|k| TaskSpec {
                name: format!("permutation {}", k + 1),
                train: (0..train.len()).collect(),
                test: (0..test.len()).collect(),
                classes: Vec::new(),
            })
            .collect())
    }
    fn transform(&self, task: usize, sample: &mut [f32]) {
        let src = sample.to_vec();
        for (dst, &from) in sample.iter_mut().zip(&self.perms[task]) {
            *dst = src[from];
        }
    }
}

// ---- Rotated --------------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `Rotated`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct RotatedHps {
        pub angles: Vec<i64> {
            kind: HpKind::IntList { min: -360, max: 360 },
            default: json!([0, 30, 60, 90, 120]),
            help: "one task per angle (degrees, counter-clockwise), every sample rotated about the image centre",
        },
    }
}

/// Rotated: every task holds every sample, rotated by the task's angle (bilinear, zero fill).
pub struct Rotated {
    angles: Vec<i64>,
    shape: (usize, usize, usize),
}

pub fn build_rotated(
    hps: RotatedHps,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn TaskDefinition>> {
    let (_, h, w) = ctx.input_shape;
    if h < 2 || w < 2 {
        anyhow::bail!("Rotated needs image samples, but they are {:?} (channels, height, width); set `testenv.dataset.shape`", ctx.input_shape);
    }
    Ok(Box::new(Rotated {
        angles: hps.angles,
        shape: ctx.input_shape,
    }))
}

impl TaskDefinition for Rotated {
    fn tasks(&self, train: &Dataset, test: &Dataset) -> anyhow::Result<Vec<TaskSpec>> {
        Ok(self
            .angles
            .iter()
            .map(|a| TaskSpec {
                name: format!("rotated {a}°"),
                train: (0..train.len()).collect(),
                test: (0..test.len()).collect(),
                classes: Vec::new(),
            })
            .collect())
    }
    fn transform(&self, task: usize, sample: &mut [f32]) {
        rotate(sample, self.shape, self.angles[task] as f64);
    }
}

/// Rotates every channel of a `(c, h, w)` image counter-clockwise by `degrees` about its
/// centre: each output pixel reads the input at the inversely rotated position, bilinearly
/// interpolated; positions outside the image read 0.
pub fn rotate(img: &mut [f32], (c, h, w): (usize, usize, usize), degrees: f64) {
    if degrees % 360.0 == 0.0 {
        return;
    }
    let (s, co) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let src = img.to_vec();
    let at = |ch: usize, y: isize, x: isize| -> f64 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            f64::from(src[ch * h * w + y as usize * w + x as usize])
        }
    };
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                // Image rows grow downwards, so a counter-clockwise turn on screen maps the
                // output offset (dx, dy) back by the clockwise rotation in these coordinates.
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let sx = co * dx - s * dy + cx;
                let sy = s * dx + co * dy + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let v = at(ch, y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + at(ch, y0, x0 + 1) * fx * (1.0 - fy)
                    + at(ch, y0 + 1, x0) * (1.0 - fx) * fy
                    + at(ch, y0 + 1, x0 + 1) * fx * fy;
                img[ch * h * w + y * w + x] = v as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ianvs_paradigms::hp::{HpStruct, Hyperparameters};

    fn data(labels: &[u32]) -> Dataset {
        Dataset {
            dim: 1,
            features: labels.iter().map(|&l| l as f32).collect(),
            labels: labels.to_vec(),
            ..Default::default()
        }
    }

    /// Typed hyperparameters from a JSON object, as a case would resolve them.
    fn hps<H: HpStruct>(v: serde_json::Value) -> H {
        H::parse(&serde_json::from_value::<Hyperparameters>(v).unwrap()).unwrap()
    }

    #[test]
    fn split_deals_classes_into_tasks() {
        let ctx = BuildContext {
            input_shape: (1, 1, 1),
            num_classes: 5,
            seed: 0,
        };
        let s = build_split(
            hps(json!({"classes_per_task": 2, "num_tasks": 0, "class_order": []})),
            &ctx,
        )
        .unwrap();
        let t = s
            .tasks(&data(&[0, 1, 2, 3, 4, 0]), &data(&[4, 3, 2, 1, 0]))
            .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].name.as_str(), t[0].train.clone(), t[0].test.clone()),
            ("classes 0+1", vec![0, 1, 5], vec![3, 4])
        );
        assert_eq!(t[2].classes, vec![4]);
        // More tasks than classes leaves the last ones empty (the paradigm reports it).
        let s = build_split(
            hps(json!({"classes_per_task": 2, "num_tasks": 4, "class_order": [4, 3, 2, 1, 0]})),
            &ctx,
        )
        .unwrap();
        let t = s.tasks(&data(&[0, 1, 2, 3, 4]), &data(&[0])).unwrap();
        assert_eq!(t[0].classes, vec![4, 3]);
        assert!(t[3].train.is_empty() && t[3].name == "no classes left");
        assert!(build_split(
            hps(json!({"classes_per_task": 2, "num_tasks": 0, "class_order": [1, 1]})),
            &ctx
        )
        .is_err());
    }

    #[test]
    fn permutations_are_seeded_and_first_is_identity() {
        let ctx = BuildContext {
            input_shape: (1, 2, 2),
            num_classes: 2,
            seed: 0,
        };
        let h: PermutedHps = hps(json!({"num_tasks": 3, "first_identity": true, "seed": 7}));
        let p = build_permuted(h.clone(), &ctx).unwrap();
        let mut a = [1.0, 2.0, 3.0, 4.0];
        p.transform(0, &mut a);
        assert_eq!(a, [1.0, 2.0, 3.0, 4.0]);
        let mut b = [1.0, 2.0, 3.0, 4.0];
        p.transform(2, &mut b);
        let mut sorted = b;
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, [1.0, 2.0, 3.0, 4.0]);
        let mut c = [1.0, 2.0, 3.0, 4.0];
        build_permuted(h.clone(), &ctx)
            .unwrap()
            .transform(2, &mut c);
        assert_eq!(b, c);
    }

    #[test]
    fn rotation_by_90_degrees_moves_pixels_exactly() {
        // 3x3 with a single lit pixel at the top middle; a 90° counter-clockwise turn moves it
        // to the middle of the left column.
        let mut img = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        rotate(&mut img, (1, 3, 3), 90.0);
        let want = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for (a, b) in img.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{img:?}");
        }
        // 360° is the identity; a 45° turn keeps the centre pixel.
        let mut img = [0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0];
        rotate(&mut img, (1, 3, 3), 45.0);
        assert!((img[4] - 5.0).abs() < 1e-6);
        assert!(build_rotated(
            hps(json!({"angles": [0]})),
            &BuildContext {
                input_shape: (1, 1, 64),
                num_classes: 2,
                seed: 0
            }
        )
        .is_err());
    }
}

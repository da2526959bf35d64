//! Metrics of lifelong-learning records: the GEM summaries of the accuracy matrix (Lopez-Paz &
//! Ranzato 2017, "Gradient Episodic Memory for Continual Learning", §4), forgetting (Chaudhry et
//! al. 2018, "Riemannian Walk for Incremental Learning"), unseen-task detection quality, and what
//! crossed the link.
//!
//! With T tasks, `R[i][j]` the accuracy on task j after training round i (1-based) and `b[j]`
//! the accuracy of the untrained model:
//! - average accuracy = 1/T · Σ_j R[T][j]
//! - BWT = 1/(T−1) · Σ_{j<T} (R[T][j] − R[j][j])
//! - FWT = 1/(T−1) · Σ_{j>1} (R[j−1][j] − b[j])
//! - forgetting = 1/(T−1) · Σ_{j<T} (max_{l<T} R[l][j] − R[T][j])
//! - learning accuracy = 1/T · Σ_j R[j][j] (how well each task is learnt when it arrives)
//!
//! Ianvs computes BWT/FWT differently (`core/testcasecontroller/metrics/metrics.py`): its
//! matrix has one row per training round and leaves out the test set of the first round, BWT
//! averages the change between consecutive rows over all (T−1)² cells — which telescopes to
//! (last row − first row)/(T−1) — and FWT compares with the accuracy after the first round
//! instead of an untrained model. Those are offered as `ianvs-bwt` and `ianvs-fwt`, on our
//! matrix laid out as Ianvs lays out its own (task 1 is Ianvs's initial training round).

use anyhow::{bail, ensure, Result};
use ianvs_paradigms::lifelong::{AccuracyMatrix, LifelongRecord, RoundRecord, StreamRecord};
use ianvs_paradigms::records::{CaseOutput, RecordKind, Records};

use super::{mean, MetricDef};

const LL: &[RecordKind] = &[RecordKind::Lifelong];

pub static METRICS: &[MetricDef] = &[
    MetricDef { id: "average-accuracy", aliases: &["task_avg_acc", "average_accuracy", "avg_acc", "ACC"], unit: "", higher_is_better: true, kinds: LL, help: "mean accuracy over every task after the last round (GEM ACC)", compute: |o| average_accuracy(&matrix(o)?.r) },
    MetricDef { id: "bwt", aliases: &["BWT", "backward_transfer"], unit: "", higher_is_better: true, kinds: LL, help: "backward transfer (GEM): mean over earlier tasks of final accuracy minus accuracy right after learning them; negative = forgetting", compute: |o| bwt(&matrix(o)?.r) },
    MetricDef { id: "fwt", aliases: &["FWT", "forward_transfer"], unit: "", higher_is_better: true, kinds: LL, help: "forward transfer (GEM): mean over tasks 2..T of accuracy before learning them minus the untrained model's", compute: |o| {
        let m = matrix(o)?;
        fwt(&m.r, &m.baseline)
    } },
    MetricDef { id: "forgetting", aliases: &["forget_rate", "average_forgetting", "Forgetting"], unit: "", higher_is_better: false, kinds: LL, help: "mean over earlier tasks of their best accuracy before the last round minus their final accuracy", compute: |o| forgetting(&matrix(o)?.r) },
    MetricDef { id: "learning-accuracy", aliases: &["learning_accuracy", "LA"], unit: "", higher_is_better: true, kinds: LL, help: "mean accuracy on each task right after the round that brought it", compute: |o| learning_accuracy(&matrix(o)?.r) },
    MetricDef { id: "ianvs-bwt", aliases: &["ianvs_bwt"], unit: "", higher_is_better: true, kinds: LL, help: "BWT by Ianvs's formula, not GEM's: on Ianvs's matrix layout (task 1 = initial round, not evaluated), the change between consecutive rounds averaged over (T-1)^2 cells", compute: |o| ianvs_bwt(&matrix(o)?.r) },
    MetricDef { id: "ianvs-fwt", aliases: &["ianvs_fwt"], unit: "", higher_is_better: true, kinds: LL, help: "FWT by Ianvs's formula, not GEM's: accuracy before learning a task minus the accuracy after round 1 (not an untrained model), over T-1", compute: |o| ianvs_fwt(&matrix(o)?.r) },
    MetricDef { id: "detection-precision", aliases: &["detection_precision"], unit: "", higher_is_better: true, kinds: LL, help: "share of the samples the edge flagged as unseen that belong to a task the knowledge base did not know (rounds 2..T)", compute: |o| detection(o)?.precision() },
    MetricDef { id: "detection-recall", aliases: &["detection_recall"], unit: "", higher_is_better: true, kinds: LL, help: "share of the samples of unknown tasks the edge flagged (rounds 2..T)", compute: |o| detection(o)?.recall() },
    MetricDef { id: "detection-false-positive-rate", aliases: &["detection_fpr", "detection-fpr"], unit: "", higher_is_better: false, kinds: LL, help: "share of the samples of known tasks the edge flagged (rounds 2..T)", compute: |o| detection(o)?.false_positive_rate() },
    MetricDef { id: "task-allocation-accuracy", aliases: &["task_allocation_accuracy"], unit: "", higher_is_better: true, kinds: LL, help: "share of the last round's test samples allocated to their own task's model (per-task knowledge bases)", compute: allocation_accuracy },
    MetricDef { id: "uplink-sample-bytes", aliases: &["uplink_sample_bytes"], unit: "B", higher_is_better: false, kinds: LL, help: "bytes of samples sent edge → cloud over all rounds (f32 features)", compute: |o| Ok(rounds(o)?.iter().map(|r| r.uplink_bytes as f64).sum()) },
    MetricDef { id: "downlink-model-bytes", aliases: &["downlink_model_bytes"], unit: "B", higher_is_better: false, kinds: LL, help: "bytes of models sent cloud → edge over all rounds (f32 parameters of every updated model)", compute: |o| Ok(rounds(o)?.iter().map(|r| r.downlink_model_bytes as f64).sum()) },
    MetricDef { id: "downlink-identity-bytes", aliases: &["downlink_identity_bytes"], unit: "B", higher_is_better: false, kinds: LL, help: "bytes of task identification (prototypes, radii) sent cloud → edge over all rounds", compute: |o| Ok(rounds(o)?.iter().map(|r| r.downlink_identity_bytes as f64).sum()) },
    MetricDef { id: "training-time-per-round", aliases: &["training_time_per_round"], unit: "s", higher_is_better: false, kinds: LL, help: "mean wall time the cloud spent training per round", compute: |o| Ok(mean(&rounds(o)?.iter().map(|r| r.train_seconds).collect::<Vec<_>>())) },
];

fn records(o: &CaseOutput) -> Result<&[LifelongRecord]> {
    match &o.records {
        Records::Lifelong(r) if !r.is_empty() => Ok(r),
        Records::Lifelong(_) => bail!("no lifelong-learning records"),
        other => bail!(
            "{:?} records are not lifelong-learning records",
            other.kind()
        ),
    }
}

fn matrix(o: &CaseOutput) -> Result<AccuracyMatrix> {
    AccuracyMatrix::from_records(records(o)?)
}

fn rounds(o: &CaseOutput) -> Result<Vec<&RoundRecord>> {
    let r: Vec<&RoundRecord> = records(o)?
        .iter()
        .filter_map(|r| {
            if let LifelongRecord::Round(x) = r {
                Some(x)
            } else {
                None
            }
        })
        .collect();
    ensure!(!r.is_empty(), "no round was recorded");
    Ok(r)
}

fn stream(o: &CaseOutput) -> Result<impl Iterator<Item = &StreamRecord>> {
    Ok(records(o)?.iter().filter_map(|r| {
        if let LifelongRecord::Stream(x) = r {
            Some(x)
        } else {
            None
        }
    }))
}

/// Samples sent to the cloud / samples the edge inferred, over the rounds where the edge had a
/// model to infer with (round 1 uploads everything by necessity); no `+1` as in Ianvs.
pub fn samples_transfer_ratio(o: &CaseOutput) -> Result<f64> {
    let (mut inferred, mut sent) = (0usize, 0usize);
    for r in stream(o)?.filter(|r| r.prediction.is_some()) {
        inferred += 1;
        sent += usize::from(r.flagged);
    }
    ensure!(
        inferred > 0,
        "the edge inferred no sample (a single round uploads everything)"
    );
    Ok(sent as f64 / inferred as f64)
}

/// Confusion counts of unseen-task detection, positives = samples of unknown tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetectionCounts {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub tn: usize,
}

impl DetectionCounts {
    fn ratio(a: usize, b: usize) -> Result<f64> {
        ensure!(b > 0, "no sample to compute it over");
        Ok(a as f64 / b as f64)
    }
    pub fn precision(&self) -> Result<f64> {
        Self::ratio(self.tp, self.tp + self.fp)
            .map_err(|_| anyhow::anyhow!("the detector flagged no sample"))
    }
    pub fn recall(&self) -> Result<f64> {
        Self::ratio(self.tp, self.tp + self.fn_)
            .map_err(|_| anyhow::anyhow!("no sample of an unknown task reached the detector"))
    }
    pub fn false_positive_rate(&self) -> Result<f64> {
        Self::ratio(self.fp, self.fp + self.tn).map_err(|_| {
            anyhow::anyhow!(
                "no sample of a known task reached the detector (stream_known_fraction is 0)"
            )
        })
    }
}

/// Counts over the samples the detector judged (every round after the first).
pub fn detection_counts<'a>(s: impl IntoIterator<Item = &'a StreamRecord>) -> DetectionCounts {
    let mut c = DetectionCounts::default();
    for r in s.into_iter().filter(|r| r.prediction.is_some()) {
        match (r.unseen, r.flagged) {
            (true, true) => c.tp += 1,
            (false, true) => c.fp += 1,
            (true, false) => c.fn_ += 1,
            (false, false) => c.tn += 1,
        }
    }
    c
}

fn detection(o: &CaseOutput) -> Result<DetectionCounts> {
    Ok(detection_counts(stream(o)?))
}

fn allocation_accuracy(o: &CaseOutput) -> Result<f64> {
    let recs = records(o)?;
    let last = recs
        .iter()
        .filter_map(|r| {
            if let LifelongRecord::Eval(e) = r {
                Some(e.after_round)
            } else {
                None
            }
        })
        .max()
        .unwrap_or(0);
    let (mut ok, mut n) = (0usize, 0usize);
    for r in recs {
        if let LifelongRecord::Eval(e) = r {
            if let (true, Some(a)) = (e.after_round == last && last > 0, e.allocated_task) {
                n += 1;
                ok += usize::from(a == e.task);
            }
        }
    }
    ensure!(
        n > 0,
        "the strategy keeps one model for every task, so samples are not allocated"
    );
    Ok(ok as f64 / n as f64)
}

// ---- The GEM definitions on a T×T matrix (0-based: r[i][j] after round i + 1) ---------------

fn square(r: &[Vec<f64>]) -> Result<usize> {
    let t = r.len();
    ensure!(
        t > 0 && r.iter().all(|row| row.len() == t),
        "the accuracy matrix must be T×T with T ≥ 1"
    );
    Ok(t)
}

fn at_least_two(r: &[Vec<f64>]) -> Result<usize> {
    let t = square(r)?;
    ensure!(t >= 2, "needs at least 2 tasks (incremental_rounds ≥ 2)");
    Ok(t)
}

pub fn average_accuracy(r: &[Vec<f64>]) -> Result<f64> {
    let t = square(r)?;
    Ok(mean(&r[t - 1]))
}

pub fn learning_accuracy(r: &[Vec<f64>]) -> Result<f64> {
    let t = square(r)?;
    Ok(mean(&(0..t).map(|j| r[j][j]).collect::<Vec<_>>()))
}

pub fn bwt(r: &[Vec<f64>]) -> Result<f64> {
    let t = at_least_two(r)?;
    Ok(mean(
        &(0..t - 1)
            .map(|j| r[t - 1][j] - r[j][j])
            .collect::<Vec<_>>(),
    ))
}

pub fn fwt(r: &[Vec<f64>], b: &[f64]) -> Result<f64> {
    let t = at_least_two(r)?;
    ensure!(
        b.len() == t,
        "the untrained accuracies b have {} entries for {t} tasks",
        b.len()
    );
    Ok(mean(
        &(1..t).map(|j| r[j - 1][j] - b[j]).collect::<Vec<_>>(),
    ))
}

pub fn forgetting(r: &[Vec<f64>]) -> Result<f64> {
    let t = at_least_two(r)?;
    Ok(mean(
        &(0..t - 1)
            .map(|j| {
                (0..t - 1)
                    .map(|l| r[l][j])
                    .fold(f64::NEG_INFINITY, f64::max)
                    - r[t - 1][j]
            })
            .collect::<Vec<_>>(),
    ))
}

/// Ianvs's BWT on our matrix in Ianvs's layout: `M[i][j] = r[i][j + 1]` (T rows, T−1 columns:
/// task 1 is the initial round and its test set is not evaluated), then
/// `Σ_{i<T−1} Σ_{j<T−1} (M[i+1][j] − M[i][j]) / (T−1)²`.
pub fn ianvs_bwt(r: &[Vec<f64>]) -> Result<f64> {
    let t = at_least_two(r)?;
    let n = t - 1;
    let m = |i: usize, j: usize| r[i][j + 1];
    let mut s = 0.0;
    for i in 0..n {
        for j in 0..n {
            s += m(i + 1, j) - m(i, j);
        }
    }
    Ok(s / (n * n) as f64)
}

/// Ianvs's FWT on the same layout: `Σ_{i<T−1} (M[i][i] − M[0][i]) / (T−1)`.
pub fn ianvs_fwt(r: &[Vec<f64>]) -> Result<f64> {
    let t = at_least_two(r)?;
    let n = t - 1;
    let m = |i: usize, j: usize| r[i][j + 1];
    Ok((0..n).map(|i| m(i, i) - m(0, i)).sum::<f64>() / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    /// A 3-task matrix with forgetting, a late recovery, and some forward transfer.
    fn r3() -> Vec<Vec<f64>> {
        vec![
            vec![0.9, 0.2, 0.1],
            vec![0.6, 0.8, 0.3],
            vec![0.7, 0.5, 0.95],
        ]
    }

    #[test]
    fn gem_definitions_match_hand_computed_values() {
        let r = r3();
        let b = [0.1, 0.1, 0.12];
        // ACC = (0.7 + 0.5 + 0.95) / 3
        close(average_accuracy(&r).unwrap(), 2.15 / 3.0);
        // BWT = ((0.7 − 0.9) + (0.5 − 0.8)) / 2 = −0.25
        close(bwt(&r).unwrap(), -0.25);
        // FWT = ((R[1][2] − b2) + (R[2][3] − b3)) / 2 = ((0.2 − 0.1) + (0.3 − 0.12)) / 2 = 0.14
        close(fwt(&r, &b).unwrap(), 0.14);
        // Forgetting: task 1 max(0.9, 0.6) − 0.7 = 0.2; task 2 max(0.2, 0.8) − 0.5 = 0.3 → 0.25
        close(forgetting(&r).unwrap(), 0.25);
        // LA = (0.9 + 0.8 + 0.95) / 3
        close(learning_accuracy(&r).unwrap(), 2.65 / 3.0);
    }

    #[test]
    fn forgetting_and_bwt_differ_when_a_task_peaks_late() {
        // Task 1 learnt to 0.5, improves to 0.9 when task 2 arrives, ends at 0.6: BWT sees a
        // gain (+0.1), forgetting sees the drop from the peak (0.3).
        let r = vec![
            vec![0.5, 0.0, 0.0],
            vec![0.9, 0.9, 0.0],
            vec![0.6, 0.9, 0.9],
        ];
        close(bwt(&r).unwrap(), (0.1 + 0.0) / 2.0);
        close(forgetting(&r).unwrap(), (0.3 + 0.0) / 2.0);
    }

    #[test]
    fn ianvs_formulas_follow_ianvs_code() {
        // numpy reference of Ianvs's `compute` on M = [[0.2, 0.1], [0.8, 0.3], [0.5, 0.95]]:
        // BWT = ((0.8−0.2) + (0.3−0.1) + (0.5−0.8) + (0.95−0.3)) / 4 = 0.2875
        // FWT = ((0.2−0.2) + (0.3−0.1)) / 2 = 0.1
        let r = r3();
        close(ianvs_bwt(&r).unwrap(), 0.2875);
        close(ianvs_fwt(&r).unwrap(), 0.1);
        // The same matrix has a negative GEM BWT: the two are not interchangeable.
        assert!(bwt(&r).unwrap() < 0.0);
    }

    #[test]
    fn undefined_cases_are_errors_not_numbers() {
        let one = vec![vec![0.9]];
        close(average_accuracy(&one).unwrap(), 0.9);
        assert!(bwt(&one)
            .unwrap_err()
            .to_string()
            .contains("at least 2 tasks"));
        assert!(fwt(&r3(), &[0.1]).is_err());
        assert!(bwt(&[vec![0.1, 0.2]]).is_err());
    }

    #[test]
    fn detection_counts_use_judged_samples_only() {
        let mk = |unseen, flagged, judged: bool| StreamRecord {
            round: 2,
            task: 0,
            index: 0,
            label: 0,
            unseen,
            flagged,
            score: None,
            prediction: judged.then_some(0),
        };
        let s = [
            mk(true, true, true),
            mk(true, false, true),
            mk(false, true, true),
            mk(false, false, true),
            mk(false, false, true),
            mk(true, true, false),
        ];
        let c = detection_counts(&s);
        assert_eq!(
            c,
            DetectionCounts {
                tp: 1,
                fp: 1,
                fn_: 1,
                tn: 2
            }
        );
        close(c.precision().unwrap(), 0.5);
        close(c.recall().unwrap(), 0.5);
        close(c.false_positive_rate().unwrap(), 1.0 / 3.0);
        assert!(DetectionCounts::default().precision().is_err());
    }
}

//! The `auto` draft-length schedule of speculative decoding: the cost model of Leviathan et al.
//! 2023 (eq. 1, with a measured verification cost in place of their "one pass costs the same
//! whatever its length") and a planner that measures the costs once per case and then follows
//! them as the case runs.
//!
//! Why once per case and not per prompt: a calibration is a few dozen verifier passes. Paid for
//! every prompt it is both wasted work and noise (each prompt then plans with a different
//! best-of-two timing taken at one moment of a shared machine), and the acceptance rate starts
//! from the prior again on every prompt. A deployment measures at start-up and keeps learning;
//! so does the planner: the calibration gives the *shape* of the verify cost v(k) for every
//! chunk size k (not a straight line: the CPU kernels group rows, so v is flat for a few rows
//! and then steps up), and the rounds themselves keep the drafter's and verifier's absolute
//! times, the link's time per round and the acceptance rate up to date.

use std::time::Instant;

use crate::modules::LmSession;

/// Expected tokens committed per round with γ drafts when each is accepted independently with
/// probability α (Leviathan et al. 2023, eq. 1): (1 − α^(γ+1)) / (1 − α).
pub fn expected_tokens(alpha: f64, gamma: usize) -> f64 {
    let a = alpha.clamp(0.0, 1.0);
    if a >= 1.0 - 1e-12 {
        return (gamma + 1) as f64;
    }
    (1.0 - a.powi(gamma as i32 + 1)) / (1.0 - a)
}

/// Predicted speed-up over verifier-only decoding with γ drafts per round: expected tokens per
/// round over the round's cost in verifier one-token steps, γ·c (drafting, c = drafter step /
/// verifier step) + v(γ+1) (one pass over the γ drafts and the token before them, in
/// verifier steps; v(1) = 1). A link's time per round, when modelled, is part of v.
pub fn predicted_rate(alpha: f64, gamma: usize, c: f64, v: impl Fn(usize) -> f64) -> f64 {
    expected_tokens(alpha, gamma) / (gamma as f64 * c + v(gamma + 1))
}

/// The γ in `1..=max` with the highest [`predicted_rate`] (the smallest on a tie).
pub fn best_gamma(alpha: f64, c: f64, v: impl Fn(usize) -> f64, max: usize) -> usize {
    let mut best = (1, f64::NEG_INFINITY);
    for g in 1..=max.max(1) {
        let r = predicted_rate(alpha, g, c, &v);
        if r > best.1 {
            best = (g, r);
        }
    }
    best.0
}

/// Measured costs, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Costs {
    /// One drafter one-token step.
    pub draft_step_s: f64,
    /// `verify_s[k - 1]`: one verifier pass over k new tokens, k = 1..=max + 1 (never
    /// decreasing in k).
    pub verify_s: Vec<f64>,
}

impl Costs {
    /// c: drafter step / verifier one-token step.
    pub fn c(&self) -> f64 {
        self.draft_step_s / self.verify_s[0]
    }

    /// v(k): a k-token verifier pass / a one-token step (the last measured k beyond the table).
    pub fn v(&self, k: usize) -> f64 {
        let i = k.clamp(1, self.verify_s.len()) - 1;
        self.verify_s[i] / self.verify_s[0]
    }
}

/// Calibration passes per chunk size; the median is kept.
const CALIBRATION_REPS: usize = 3;
/// Weight of the newest round in the running cost corrections and the link time.
const TRACKING: f64 = 0.25;
/// Per-round decay of the acceptance counts: recent rounds (this prompt's) weigh more than
/// old ones, while a new prompt still starts from what the case has learnt, not from 1/2.
const ALPHA_DECAY: f64 = 0.97;

/// Plans γ for every round of one case's `auto` schedule.
#[derive(Debug, Clone)]
pub struct AutoPlanner {
    max: usize,
    costs: Option<Costs>,
    /// Measured / calibrated drafter step and verifier pass (running, in log space).
    draft_drift: f64,
    verify_drift: f64,
    /// Link seconds per round (running) and rounds observed.
    link_s: f64,
    rounds: u64,
    /// Decayed counts of accepted and evaluated draft positions.
    accepted: f64,
    reached: f64,
}

impl AutoPlanner {
    /// A planner for γ in `1..=max`, not yet calibrated.
    pub fn new(max: usize) -> Self {
        AutoPlanner {
            max: max.max(1),
            costs: None,
            draft_drift: 1.0,
            verify_drift: 1.0,
            link_s: 0.0,
            rounds: 0,
            accepted: 0.0,
            reached: 0.0,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// The calibrated costs (before any correction from the rounds), once measured.
    pub fn costs(&self) -> Option<&Costs> {
        self.costs.as_ref()
    }

    pub fn is_calibrated(&self) -> bool {
        self.costs.is_some()
    }

    /// Plans with `costs` instead of measuring them (tests, or costs known from elsewhere).
    pub fn with_costs(mut self, costs: Costs) -> Self {
        assert_eq!(
            costs.verify_s.len(),
            self.max + 1,
            "one verify cost per k = 1..=max+1"
        );
        self.costs = Some(costs);
        self
    }

    /// Measures the drafter's one-token step and the verifier's pass over k = 1..=max+1 new
    /// tokens on the given sessions (each pass rolled back; see [`verify_table`]). Returns the
    /// seconds it took.
    pub fn calibrate(
        &mut self,
        drafter: &mut dyn LmSession,
        verifier: &mut dyn LmSession,
        token: u32,
    ) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let verify_s = verify_table(verifier, token, self.max)?;
        self.calibrate_with(drafter, token, verify_s)?;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Calibrates from a verifier table measured elsewhere (by the worker on a real link, with
    /// [`verify_table`]) and the drafter's one-token step measured here, the median of
    /// [`CALIBRATION_REPS`] rolled-back passes.
    pub fn calibrate_with(
        &mut self,
        drafter: &mut dyn LmSession,
        token: u32,
        verify_s: Vec<f64>,
    ) -> anyhow::Result<()> {
        if verify_s.len() != self.max + 1
            || verify_s
                .iter()
                .any(|t| t.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            anyhow::bail!(
                "auto γ calibration: expected {} positive verify times (k = 1..={}), got {:?}",
                self.max + 1,
                self.max + 1,
                verify_s
            );
        }
        let mut draft = Vec::new();
        for _ in 0..CALIBRATION_REPS {
            draft.push(time_pass(drafter, &[token])?);
        }
        self.costs = Some(Costs {
            draft_step_s: median(draft),
            verify_s,
        });
        Ok(())
    }

    /// The acceptance rate to plan with: the decayed counts under a uniform prior.
    pub fn alpha(&self) -> f64 {
        (self.accepted + 1.0) / (self.reached + 2.0)
    }

    /// c and v(k) as the next round will see them: the calibrated shape, scaled by what the
    /// rounds measured since, with the link's time per round counted in v.
    fn current(&self) -> Option<(f64, impl Fn(usize) -> f64 + '_)> {
        let costs = self.costs.as_ref()?;
        let step = costs.verify_s[0] * self.verify_drift;
        let c = costs.draft_step_s * self.draft_drift / step;
        let link = self.link_s / step;
        Some((c, move |k: usize| costs.v(k) + link))
    }

    /// The γ for the next round (`max` is never exceeded; 1 before calibration).
    pub fn gamma(&self) -> usize {
        match self.current() {
            Some((c, v)) => best_gamma(self.alpha(), c, v, self.max),
            None => 1,
        }
    }

    /// The speed-up the model predicts for the next round's γ.
    pub fn predicted(&self) -> Option<f64> {
        let (c, v) = self.current()?;
        Some(predicted_rate(self.alpha(), self.gamma(), c, v))
    }

    /// Learns from one finished round: γ drafts of which `accepted` were accepted (`accepted <
    /// gamma` means the next position was evaluated and rejected); the mean drafter one-token
    /// step of the round, when it had one; the verifier pass over `gamma + 1` tokens; the link.
    pub fn observe(
        &mut self,
        gamma: usize,
        accepted: usize,
        draft_step_s: Option<f64>,
        verify_s: f64,
        link_s: f64,
    ) {
        self.accepted = self.accepted * ALPHA_DECAY + accepted as f64;
        self.reached = self.reached * ALPHA_DECAY + (accepted + 1).min(gamma) as f64;
        self.link_s = if self.rounds == 0 {
            link_s
        } else {
            self.link_s + TRACKING * (link_s - self.link_s)
        };
        self.rounds += 1;
        let Some(costs) = &self.costs else {
            return;
        };
        let track = |drift: f64, measured: f64, calibrated: f64| {
            if measured > 0.0 && calibrated > 0.0 {
                (drift.ln() + TRACKING * ((measured / calibrated).ln() - drift.ln())).exp()
            } else {
                drift
            }
        };
        if let Some(d) = draft_step_s {
            self.draft_drift = track(self.draft_drift, d, costs.draft_step_s);
        }
        let k = (gamma + 1).min(costs.verify_s.len());
        self.verify_drift = track(self.verify_drift, verify_s, costs.verify_s[k - 1]);
    }
}

/// The verifier's pass over k = 1..=max+1 new tokens after the session's cache (each rolled
/// back), interleaved so that a busy moment of the machine hits every size alike, the median
/// of [`CALIBRATION_REPS`] each, never decreasing in k (a pass over more rows does the same
/// work and more: a smaller median is noise).
pub fn verify_table(
    verifier: &mut dyn LmSession,
    token: u32,
    max: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut verify: Vec<Vec<f64>> = vec![Vec::new(); max + 1];
    for _ in 0..CALIBRATION_REPS {
        for (i, times) in verify.iter_mut().enumerate() {
            times.push(time_pass(verifier, &vec![token; i + 1])?);
        }
    }
    let mut verify_s: Vec<f64> = verify.into_iter().map(median).collect();
    for i in 1..verify_s.len() {
        verify_s[i] = verify_s[i].max(verify_s[i - 1]);
    }
    Ok(verify_s)
}

/// Times `forward(tokens)` on a session and rolls it back.
fn time_pass(s: &mut dyn LmSession, tokens: &[u32]) -> anyhow::Result<f64> {
    let len = s.len();
    let t0 = Instant::now();
    s.forward(tokens)?;
    let dt = t0.elapsed().as_secs_f64();
    s.truncate(len)?;
    Ok(dt)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `auto` γ: the argmax of the documented cost model, and the extremes it must reach.
    #[test]
    fn best_gamma_maximises_the_predicted_rate() {
        // Brute force over the same model, on a grid of α, c and v slopes.
        for &alpha in &[0.0, 0.3, 0.6, 0.8, 0.95, 1.0] {
            for &c in &[0.01, 0.1, 0.45, 1.5] {
                for &slope in &[0.0, 0.1, 0.5, 1.0] {
                    let v = |k: usize| 1.0 + slope * (k - 1) as f64;
                    let g = best_gamma(alpha, c, v, 16);
                    assert!((1..=16).contains(&g));
                    for other in 1..=16 {
                        assert!(
                            predicted_rate(alpha, g, c, v) >= predicted_rate(alpha, other, c, v),
                            "α {alpha} c {c} slope {slope}: γ {g} loses to {other}"
                        );
                    }
                }
            }
        }
        // Nothing is ever accepted: the shortest draft. Everything accepted, free drafting
        // and verification: the longest.
        assert_eq!(best_gamma(0.0, 0.1, |_| 1.0, 16), 1);
        assert_eq!(best_gamma(1.0, 0.0, |_| 1.0, 16), 16);
        // Leviathan et al.'s Table/figure regime: α 0.8, c 0.05, free verification → γ grows;
        // costly drafting (c 0.5) keeps it short.
        assert!(best_gamma(0.8, 0.05, |_| 1.0, 16) >= 5);
        assert!(best_gamma(0.8, 0.5, |_| 1.0, 16) <= 3);
        // A verify pass linear in the rows (v(k) = k) makes speculation a loss: γ = 1.
        assert_eq!(best_gamma(0.8, 0.1, |k| k as f64, 16), 1);
        // expected_tokens: 1 + α + … + α^γ.
        assert!((expected_tokens(0.5, 2) - 1.75).abs() < 1e-12);
        assert_eq!(expected_tokens(1.0, 4), 5.0);
    }

    fn costs(draft: f64, verify: &[f64]) -> Costs {
        Costs {
            draft_step_s: draft,
            verify_s: verify.to_vec(),
        }
    }

    #[test]
    fn v_is_read_from_the_measured_table() {
        let c = costs(0.02, &[0.1, 0.11, 0.12, 0.2, 0.21]);
        assert!((c.c() - 0.2).abs() < 1e-12);
        assert_eq!(c.v(1), 1.0);
        assert!((c.v(3) - 1.2).abs() < 1e-12);
        assert!((c.v(5) - 2.1).abs() < 1e-12);
        assert!(
            (c.v(9) - 2.1).abs() < 1e-12,
            "beyond the table: the last entry"
        );
    }

    /// A step in v (rows grouped by the kernels) is seen: with v flat up to 4 rows and
    /// doubling at 5, γ stops at 3 although a straight line through v(1) and v(9) would
    /// allow more.
    #[test]
    fn the_plan_follows_the_shape_of_v() {
        let flat_then_step = costs(0.01, &[1.0, 1.0, 1.0, 1.0, 2.5, 2.5, 2.5, 2.5, 2.5]);
        let mut p = AutoPlanner::new(8).with_costs(flat_then_step);
        for _ in 0..200 {
            p.observe(3, 2, None, 1.0, 0.0); // α → 2/3
        }
        assert_eq!(p.gamma(), 3);
        let (c, v) = p.current().unwrap();
        for g in 1..=8 {
            assert!(predicted_rate(p.alpha(), 3, c, &v) >= predicted_rate(p.alpha(), g, c, &v));
        }
    }

    /// The acceptance rate carries over between prompts and follows the recent rounds; an
    /// uncalibrated planner drafts one token.
    #[test]
    fn alpha_is_learnt_across_rounds() {
        let p = AutoPlanner::new(8);
        assert_eq!(p.gamma(), 1);
        assert_eq!(p.alpha(), 0.5);
        let mut p = p.with_costs(costs(0.1, &[1.0; 9]));
        for _ in 0..100 {
            p.observe(4, 4, None, 1.0, 0.0);
        }
        assert!(p.alpha() > 0.95, "{}", p.alpha());
        let long = p.gamma();
        for _ in 0..200 {
            p.observe(4, 0, None, 1.0, 0.0);
        }
        assert!(p.alpha() < 0.1, "{}", p.alpha());
        assert!(p.gamma() < long);
        assert_eq!(p.gamma(), 1);
    }

    /// When the drafter turns out slower than calibrated (the machine got busy on the edge),
    /// c follows the rounds and γ shrinks; a slow link makes longer drafts pay.
    #[test]
    fn costs_follow_what_the_rounds_measure() {
        let base = costs(0.1, &[1.0, 1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3.1, 3.4]);
        let mut p = AutoPlanner::new(8).with_costs(base.clone());
        for _ in 0..30 {
            p.observe(2, 2, Some(0.1), p.costs().unwrap().verify_s[2], 0.0);
        }
        let before = p.gamma();
        let c0 = p.current().unwrap().0;
        assert!((c0 - 0.1).abs() < 1e-9, "{c0}");
        for _ in 0..30 {
            p.observe(2, 2, Some(0.5), 1.6, 0.0);
        }
        let c1 = p.current().unwrap().0;
        assert!((c1 - 0.5).abs() < 0.01, "{c1}");
        assert!(p.gamma() < before, "{} !< {before}", p.gamma());

        let mut slow_link = AutoPlanner::new(8).with_costs(base);
        let mut fast_link = slow_link.clone();
        for _ in 0..30 {
            slow_link.observe(2, 1, Some(0.1), 1.6, 5.0);
            fast_link.observe(2, 1, Some(0.1), 1.6, 0.0);
        }
        assert_eq!(fast_link.gamma(), 1);
        assert!(slow_link.gamma() >= 3, "{}", slow_link.gamma());
    }

    /// A toy session whose forward sleeps in proportion to the new tokens: the calibration
    /// measures every chunk size, keeps v non-decreasing and rolls the cache back.
    #[test]
    fn calibration_measures_every_chunk_size_and_rolls_back() {
        struct Sleepy {
            len: usize,
            per_token_ms: u64,
        }
        impl LmSession for Sleepy {
            fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
                std::thread::sleep(std::time::Duration::from_millis(
                    self.per_token_ms * tokens.len() as u64,
                ));
                self.len += tokens.len();
                Ok(vec![vec![0.0; 4]; tokens.len()])
            }
            fn len(&self) -> usize {
                self.len
            }
            fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
                self.len = len;
                Ok(())
            }
        }
        let mut d = Sleepy {
            len: 7,
            per_token_ms: 1,
        };
        let mut v = Sleepy {
            len: 7,
            per_token_ms: 4,
        };
        let mut p = AutoPlanner::new(3);
        p.calibrate(&mut d, &mut v, 0).unwrap();
        assert_eq!((d.len, v.len), (7, 7));
        let c = p.costs().unwrap();
        assert_eq!(c.verify_s.len(), 4);
        assert!(c.verify_s.windows(2).all(|w| w[0] <= w[1]));
        assert!(c.v(4) > 2.5, "a 4-token pass sleeps 4×: v(4) = {}", c.v(4));
        assert!(c.c() < 0.6, "c = {}", c.c());
    }
}

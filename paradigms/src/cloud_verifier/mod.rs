//! The cloud side of speculative decoding, wherever it runs: in the ianvs process behind the
//! emulated link ([`LocalVerifier`]), or in an `ianvs serve` worker over a real link
//! ([`RemoteVerifier`] on the edge, [`LmHost`] in the worker). Both sides run the same
//! [`VerifySession`] code, seeded the same way, so a generation over TCP is token for token the
//! one made in-process (tested in `tests/network.rs`).
//!
//! ## Messages (the payload of a wire `Request`/`Response`, little-endian)
//! `op u8 | session u64 | body`; a session is one generation, its KV cache stays in the worker.
//! - `OPEN`: seed u64, temperature f32, top_k u32, top_p f32, greedy u8, prompt tokens (u32 …)
//!   → the first token u32 (the verifier's prefill, as verifier-only decoding).
//! - `VERIFY`: n_feed u32, n_drafts u32, feed tokens (the committed tokens the worker has not
//!   fed, then the drafts), then q(xᵢ) f32 per draft when sampling → accepted u32, then
//!   `0 | token u32` (the correction or bonus token) or `1 | p f32 × vocabulary` (sampling, a
//!   rejection: the edge, which holds q, draws from norm(max(0, p − q))). The worker cuts its
//!   cache back to the accepted prefix itself.
//! - `CALIBRATE`: token u32, max u32 → the verifier's pass over k = 1..=max+1 tokens, seconds,
//!   max+1 f64s (`auto_gamma::verify_table`)
//!   (the `auto` schedule's v; the passes are rolled back).
//! - `GENERATE` (verifier-only): seed u64, temperature f32, top_k u32, top_p f32, max_new u32,
//!   stop_at_eos u8, prompt tokens → one response per generated token, streamed as it is made:
//!   last u8, token u32, top-2 logit margin f32; each carries that step's compute time.
//! - `CLOSE` → no response (the edge does not wait; a CLOSE lost on the way, e.g. in an outage,
//!   leaves the session until the connection closes). `ENCODE` text → tokens, `DECODE` tokens
//!   → text (the worker holds the verifier's tokenizer; used off the clock).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::link::Link;
use crate::modules::{LanguageModel, LmSession};
use crate::net::Miss;
use crate::sampling::{self, SamplingParams};

mod host;
mod remote;

pub use host::LmHost;
pub use remote::{decode, encode, generate, RemoteVerifier, Streamed, StreamedToken};

pub const OPEN: u8 = 1;
pub const VERIFY: u8 = 2;
pub const CALIBRATE: u8 = 3;
pub const GENERATE: u8 = 4;
pub const CLOSE: u8 = 5;
pub const ENCODE: u8 = 6;
pub const DECODE: u8 = 7;

/// Sessions one worker keeps open at once (over all connections) by default.
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// What follows the accepted drafts of a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The verifier's correction (greedy), or the bonus token after a full acceptance.
    Token(u32),
    /// Rejection sampling rejected a draft: the verifier's processed distribution there; the
    /// edge draws the replacement from the residual.
    Residual(Vec<f32>),
}

/// The outcome of verifying one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub accepted: usize,
    pub next: Next,
}

/// A cloud answer with the time split the edge sees.
#[derive(Debug, Clone)]
pub struct Exchanged<T> {
    pub value: T,
    /// The verifier's compute (reported by the worker over a real link).
    pub compute_s: f64,
    /// Link time: modelled or slept (emulated), or measured round trip − compute (real:
    /// network + queueing).
    pub link_s: f64,
    /// Message and frame encode/decode on the edge (real link only).
    pub codec_s: f64,
    /// Bytes on the link: the protocol's payload (emulated) or whole frames (real).
    pub up_bytes: usize,
    pub down_bytes: usize,
}

impl Exchanged<()> {
    /// The same exchange carrying `value`, with `codec_s` more coding time.
    fn with<T>(self, value: T, codec_s: f64) -> Exchanged<T> {
        Exchanged {
            value,
            compute_s: self.compute_s,
            link_s: self.link_s,
            codec_s: self.codec_s + codec_s,
            up_bytes: self.up_bytes,
            down_bytes: self.down_bytes,
        }
    }
}

/// Why the cloud part of a round has no answer.
#[derive(Debug)]
pub enum CloudError {
    /// The cloud missed the deadline or could not be reached (the policy decides).
    Miss(Miss),
    /// Anything else (a bad answer, a model error): fails the case.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for CloudError {
    fn from(e: anyhow::Error) -> Self {
        CloudError::Fatal(e)
    }
}

impl std::fmt::Display for CloudError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudError::Miss(m) => write!(f, "{m}"),
            CloudError::Fatal(e) => write!(f, "{e:#}"),
        }
    }
}

/// The verifier of one generation as the edge's loop sees it.
pub trait CloudVerifier {
    /// Starts the generation: the verifier prefills the prompt and returns the first token.
    fn open(&mut self, seed: u64, prompt: &[u32]) -> Result<Exchanged<u32>, CloudError>;
    /// Times the verifier's pass over k = 1..=max+1 tokens after the cache (rolled back):
    /// [`crate::auto_gamma::verify_table`], seconds for each k.
    fn calibrate(&mut self, token: u32, max: usize) -> Result<Vec<f64>, CloudError>;
    /// Verifies `feed` (`feed.len() - qx_or_drafts` committed tokens, then `n_drafts` drafts).
    fn verify(
        &mut self,
        feed: &[u32],
        n_drafts: usize,
        qx: &[f32],
    ) -> Result<Exchanged<Verdict>, CloudError>;
    /// Ends the generation (frees the worker's cache).
    fn close(&mut self);
}

/// The verifier's state for one generation: its KV cache and the cloud's random stream.
pub struct VerifySession<'a> {
    sess: Box<dyn LmSession + 'a>,
    rng: ChaCha8Rng,
    params: SamplingParams,
    greedy: bool,
}

impl<'a> VerifySession<'a> {
    /// `seed` is the generation's seed (the edge's drafting stream uses it as is; the cloud's
    /// stream is derived from it).
    pub fn new(
        model: &'a dyn LanguageModel,
        seed: u64,
        params: SamplingParams,
        greedy: bool,
    ) -> Self {
        VerifySession {
            sess: model.new_session(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xC10D),
            params,
            greedy,
        }
    }

    /// Prefills the prompt; its last row gives the first token.
    pub fn prefill(&mut self, prompt: &[u32]) -> anyhow::Result<u32> {
        let logits = self.sess.forward_last(prompt)?;
        Ok(if self.greedy {
            sampling::argmax(&logits)?
        } else {
            sampling::sample(&sampling::probs(&logits, &self.params)?, &mut self.rng)?
        })
    }

    /// One pass over `feed` (unfed committed tokens, then `qx.len()`-or-`n_drafts` drafts),
    /// the acceptance test per draft, and the cache cut back to what is now committed.
    pub fn verify(&mut self, feed: &[u32], n_drafts: usize, qx: &[f32]) -> anyhow::Result<Verdict> {
        if n_drafts == 0 || n_drafts >= feed.len() {
            anyhow::bail!(
                "a verify chunk needs at least one committed token before {n_drafts} drafts, got {} tokens",
                feed.len()
            );
        }
        if !self.greedy && qx.len() != n_drafts {
            anyhow::bail!(
                "rejection sampling needs q(x) for each of the {n_drafts} drafts, got {}",
                qx.len()
            );
        }
        let before = self.sess.len();
        let n_unfed = feed.len() - n_drafts;
        let drafts = &feed[n_unfed..];
        let rows = self.sess.forward(feed)?;
        // rows[n_unfed - 1 + i] is the verifier's distribution for draft i (i = γ: the bonus).
        let base = n_unfed - 1;
        let mut k = 0;
        let mut next = None;
        for (i, &d) in drafts.iter().enumerate() {
            let logits = &rows[base + i];
            if self.greedy {
                let best = sampling::argmax(logits)?;
                if best != d {
                    next = Some(Next::Token(best));
                    break;
                }
            } else {
                let p = sampling::probs(logits, &self.params)?;
                let (px, q) = (p[d as usize], qx[i]);
                let u: f32 = self.rng.random();
                if !(q > 0.0 && u < (px / q).min(1.0)) {
                    next = Some(Next::Residual(p));
                    break;
                }
            }
            k += 1;
        }
        let next = match next {
            Some(n) => n,
            None => {
                let logits = &rows[base + n_drafts];
                Next::Token(if self.greedy {
                    sampling::argmax(logits)?
                } else {
                    sampling::sample(&sampling::probs(logits, &self.params)?, &mut self.rng)?
                })
            }
        };
        self.sess.truncate(before + n_unfed + k)?;
        Ok(Verdict { accepted: k, next })
    }

    /// The verifier's pass over k = 1..=max+1 tokens, rolled back
    /// ([`crate::auto_gamma::verify_table`]).
    pub fn calibrate(&mut self, token: u32, max: usize) -> anyhow::Result<Vec<f64>> {
        crate::auto_gamma::verify_table(self.sess.as_mut(), token, max)
    }
}

/// Times `forward(tokens)` on a session and rolls it back; the best of `reps`.
pub fn time_pass(s: &mut dyn LmSession, tokens: &[u32], reps: usize) -> anyhow::Result<f64> {
    let len = s.len();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t0 = Instant::now();
        s.forward(tokens)?;
        best = best.min(t0.elapsed().as_secs_f64());
        s.truncate(len)?;
    }
    Ok(best)
}

fn tokens_bytes(n: usize) -> usize {
    4 * n
}

/// The verifier in the ianvs process, behind the emulated link: each exchange's bytes are the
/// protocol's payload (see `speculative.rs`) and its time the link model's.
pub struct LocalVerifier<'a, 'l> {
    model: &'a dyn LanguageModel,
    link: &'l mut Link,
    params: SamplingParams,
    greedy: bool,
    session: Option<VerifySession<'a>>,
}

impl<'a, 'l> LocalVerifier<'a, 'l> {
    pub fn new(
        model: &'a dyn LanguageModel,
        link: &'l mut Link,
        params: SamplingParams,
        greedy: bool,
    ) -> Self {
        LocalVerifier {
            model,
            link,
            params,
            greedy,
            session: None,
        }
    }

    fn session(&mut self) -> anyhow::Result<&mut VerifySession<'a>> {
        self.session
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the verifier session is not open"))
    }
}

impl CloudVerifier for LocalVerifier<'_, '_> {
    fn open(&mut self, seed: u64, prompt: &[u32]) -> Result<Exchanged<u32>, CloudError> {
        let session = self.session.insert(VerifySession::new(
            self.model,
            seed,
            self.params,
            self.greedy,
        ));
        let mut ex = self.link.exchange();
        let up = ex.up(tokens_bytes(prompt.len()));
        let t0 = Instant::now();
        let first = session.prefill(prompt)?;
        let compute_s = t0.elapsed().as_secs_f64();
        let down = ex.down(tokens_bytes(1));
        Ok(Exchanged {
            value: first,
            compute_s,
            link_s: up.seconds + down.seconds,
            codec_s: 0.0,
            up_bytes: up.bytes,
            down_bytes: down.bytes,
        })
    }

    fn calibrate(&mut self, token: u32, max: usize) -> Result<Vec<f64>, CloudError> {
        Ok(self.session()?.calibrate(token, max)?)
    }

    fn verify(
        &mut self,
        feed: &[u32],
        n_drafts: usize,
        qx: &[f32],
    ) -> Result<Exchanged<Verdict>, CloudError> {
        let greedy = self.greedy;
        let vocab = self.model.vocab_size();
        // Up: the drafts (+ q(x) scalars when sampling); every committed token but a residual
        // draw was produced by the cloud itself, so the emulation counts only the drafts.
        let mut ex = self.link.exchange();
        let up = ex.up(tokens_bytes(n_drafts) + if greedy { 0 } else { 4 * n_drafts });
        let t0 = Instant::now();
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the verifier session is not open"))?;
        let verdict = session.verify(feed, n_drafts, qx)?;
        let compute_s = t0.elapsed().as_secs_f64();
        // Down: accepted count + token, or the token slot + p over the vocabulary.
        let down_bytes = match verdict.next {
            Next::Token(_) => tokens_bytes(2),
            Next::Residual(_) => tokens_bytes(1) + 4 * vocab,
        };
        let down = ex.down(down_bytes);
        Ok(Exchanged {
            value: verdict,
            compute_s,
            link_s: up.seconds + down.seconds,
            codec_s: 0.0,
            up_bytes: up.bytes,
            down_bytes: down.bytes,
        })
    }

    fn close(&mut self) {
        self.session = None;
    }
}

// ---- message encoding -------------------------------------------------------------------

fn put_u32s(out: &mut Vec<u8>, v: &[u32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_params(out: &mut Vec<u8>, seed: u64, p: &SamplingParams) {
    out.extend_from_slice(&seed.to_le_bytes());
    out.extend_from_slice(&p.temperature.to_le_bytes());
    out.extend_from_slice(&(p.top_k as u32).to_le_bytes());
    out.extend_from_slice(&p.top_p.to_le_bytes());
}

fn header(op: u8, session: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.push(op);
    v.extend_from_slice(&session.to_le_bytes());
    v
}

/// A cursor over a message body with located errors.
struct Cur<'b> {
    b: &'b [u8],
    at: usize,
}

impl<'b> Cur<'b> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'b [u8]> {
        let s = self.b.get(self.at..self.at + n).ok_or_else(|| {
            anyhow::anyhow!(
                "speculative message truncated: {} bytes, needed {} at offset {}",
                self.b.len(),
                n,
                self.at
            )
        })?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn f32(&mut self) -> anyhow::Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn f64(&mut self) -> anyhow::Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn rest(&mut self) -> &'b [u8] {
        let r = &self.b[self.at.min(self.b.len())..];
        self.at = self.b.len();
        r
    }
    fn u32s(&mut self, n: usize) -> anyhow::Result<Vec<u32>> {
        Ok(self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    fn f32s(&mut self, n: usize) -> anyhow::Result<Vec<f32>> {
        Ok(self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    fn params(&mut self) -> anyhow::Result<(u64, SamplingParams)> {
        let seed = self.u64()?;
        let p = SamplingParams {
            temperature: self.f32()?,
            top_k: self.u32()? as usize,
            top_p: self.f32()?,
            seed,
        };
        p.validate()?;
        Ok((seed, p))
    }
    fn rest_u32s(&mut self) -> anyhow::Result<Vec<u32>> {
        let r = self.rest();
        if !r.len().is_multiple_of(4) {
            anyhow::bail!("token list of {} bytes is not a multiple of 4", r.len());
        }
        Ok(r.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A 4-token toy LM: the next token is (last + 1) mod 4, with a clear margin.
    struct Counter;
    struct CounterSession(Vec<u32>);
    impl LanguageModel for Counter {
        fn describe(&self) -> String {
            "counter".into()
        }
        fn vocab_size(&self) -> usize {
            4
        }
        fn vocab_fingerprint(&self) -> u64 {
            4
        }
        fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
            Ok(text.bytes().map(|b| u32::from(b) % 4).collect())
        }
        fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
            Ok(ids.iter().map(|i| i.to_string()).collect())
        }
        fn eos_id(&self) -> Option<u32> {
            None
        }
        fn weight_bytes(&self) -> usize {
            0
        }
        fn new_session(&self) -> Box<dyn LmSession + '_> {
            Box::new(CounterSession(Vec::new()))
        }
    }
    impl LmSession for CounterSession {
        fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
            Ok(tokens
                .iter()
                .map(|&t| {
                    self.0.push(t);
                    (0..4)
                        .map(|v| if v == (t + 1) % 4 { 3.0 } else { 0.0 })
                        .collect()
                })
                .collect())
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
            self.0.truncate(len);
            Ok(())
        }
    }

    fn open_msg(session: u64, prompt: &[u32]) -> Vec<u8> {
        let mut m = header(OPEN, session);
        put_params(&mut m, 7, &SamplingParams::greedy());
        m.push(1);
        put_u32s(&mut m, prompt);
        m
    }

    fn ask(host: &mut LmHost, msg: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        host.handle(msg, &mut |p, _| {
            out.push(p);
            Ok(())
        })?;
        Ok(out)
    }

    /// Sessions: verification cuts the cache back to the accepted prefix, the limit holds over
    /// the worker, closing and dropping the connection free them, unknown ones are errors.
    #[test]
    fn sessions_verify_truncate_and_respect_the_limit() {
        let open = AtomicUsize::new(0);
        let mut host = LmHost::new(&Counter, &open, 1);
        let first = ask(&mut host, &open_msg(1, &[0, 1])).unwrap();
        assert_eq!(first, vec![2u32.to_le_bytes().to_vec()]);
        assert_eq!(open.load(Ordering::SeqCst), 1);
        // Feed [2] then drafts 3, 0, 2: the first two match the counter, the third does not.
        let mut v = header(VERIFY, 1);
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&3u32.to_le_bytes());
        put_u32s(&mut v, &[2, 3, 0, 2]);
        let r = ask(&mut host, &v).unwrap();
        let mut c = Cur { b: &r[0], at: 0 };
        assert_eq!(
            (c.u32().unwrap(), c.u8().unwrap(), c.u32().unwrap()),
            (2, 0, 1)
        );
        // Prompt (2) + the unfed token + 2 accepted drafts stay cached.
        assert_eq!(host.sessions[&1].sess.len(), 5);
        let e = ask(&mut host, &open_msg(2, &[0])).unwrap_err();
        assert!(e.to_string().contains("--max-sessions"), "{e}");
        assert!(ask(&mut host, &header(CLOSE, 1)).unwrap().is_empty());
        assert_eq!(open.load(Ordering::SeqCst), 0);
        let e = ask(&mut host, &v).unwrap_err();
        assert!(e.to_string().contains("no open session 1"), "{e}");
        ask(&mut host, &open_msg(2, &[0])).unwrap();
        assert_eq!(open.load(Ordering::SeqCst), 1);
        drop(host);
        assert_eq!(
            open.load(Ordering::SeqCst),
            0,
            "a dropped connection frees its sessions"
        );
    }

    /// Passes `budget` verify rounds to the in-process verifier, then misses every round.
    struct Flaky<'a, 'l> {
        inner: LocalVerifier<'a, 'l>,
        budget: usize,
    }
    impl CloudVerifier for Flaky<'_, '_> {
        fn open(&mut self, seed: u64, prompt: &[u32]) -> Result<Exchanged<u32>, CloudError> {
            self.inner.open(seed, prompt)
        }
        fn calibrate(&mut self, t: u32, max: usize) -> Result<Vec<f64>, CloudError> {
            if self.budget == 0 {
                return Err(CloudError::Miss(Miss::Deadline));
            }
            self.inner.calibrate(t, max)
        }
        fn verify(
            &mut self,
            feed: &[u32],
            n: usize,
            qx: &[f32],
        ) -> Result<Exchanged<Verdict>, CloudError> {
            if self.budget == 0 {
                return Err(CloudError::Miss(Miss::Deadline));
            }
            self.budget -= 1;
            self.inner.verify(feed, n, qx)
        }
        fn close(&mut self) {
            self.inner.close()
        }
    }

    /// A cloud that stops answering mid-generation: `fallback` finishes on the drafter and
    /// counts the unverified tokens (the round's drafts and everything after); `fail` fails.
    #[test]
    fn a_miss_mid_generation_falls_back_or_fails_by_policy() {
        use crate::speculative::{speculative_with, Generation, Schedule, Verification};
        let gen = Generation {
            params: SamplingParams::greedy(),
            max_new_tokens: 12,
            stop_at_eos: false,
        };
        let mut link = Link::new(crate::link::LinkSpec::lan(0));
        let run = |policy, link: &mut Link, schedule, budget| {
            let mut cloud = Flaky {
                inner: LocalVerifier::new(&Counter, link, gen.params, true),
                budget,
            };
            speculative_with(
                &Counter,
                &mut cloud,
                &[],
                &[0, 1],
                &gen,
                2,
                schedule,
                Verification::Greedy,
                policy,
                0,
                None,
            )
        };
        let fallback = crate::net::OnFailure::Fallback;
        let r = run(fallback, &mut link, Schedule::Constant, 1).unwrap();
        // The counter continues 2, 3, 0, 1, …: the first token and one verified round (2
        // drafts + bonus) are verified, the other 8 are the drafter's alone.
        let want: Vec<u32> = (0..12).map(|i| (2 + i) % 4).collect();
        assert_eq!(r.output_tokens, want);
        assert_eq!(r.fallback_tokens, 8);
        assert_eq!((r.verifier_calls, r.drafted, r.accepted), (2, 2, 2));
        assert_eq!(r.token_times_s.len(), 12);
        let e = run(
            crate::net::OnFailure::Fail,
            &mut link,
            Schedule::Constant,
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("on_cloud_failure is `fail`"), "{e}");
        // `auto` asks the cloud to calibrate first: a miss there leaves only the first token
        // verified.
        let r = run(fallback, &mut link, Schedule::Auto { max: 4 }, 0).unwrap();
        assert_eq!(r.output_tokens, want);
        assert_eq!((r.fallback_tokens, r.verifier_calls), (11, 1));
    }

    /// A streamed verifier-only generation stops at max_new_tokens, the last marked.
    #[test]
    fn generate_streams_one_response_per_token() {
        let open = AtomicUsize::new(0);
        let mut host = LmHost::new(&Counter, &open, 4);
        let mut m = header(GENERATE, 9);
        put_params(&mut m, 7, &SamplingParams::greedy());
        m.extend_from_slice(&3u32.to_le_bytes());
        m.push(1);
        put_u32s(&mut m, &[1]);
        let out = ask(&mut host, &m).unwrap();
        let toks: Vec<(u8, u32)> = out
            .iter()
            .map(|b| {
                let mut c = Cur { b, at: 0 };
                (c.u8().unwrap(), c.u32().unwrap())
            })
            .collect();
        assert_eq!(toks, vec![(0, 2), (0, 3), (1, 0)]);
        assert!(ask(&mut host, &[99, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}

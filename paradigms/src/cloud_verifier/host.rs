//! The worker's side: one connection's verifier sessions over a hosted model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    put_u32s, Cur, Next, VerifySession, CALIBRATE, CLOSE, DECODE, ENCODE, GENERATE, OPEN, VERIFY,
};
use crate::modules::LanguageModel;
use crate::sampling;

/// A worker connection's verifier sessions over one hosted model. Dropped with the
/// connection, which frees every session it still holds.
pub struct LmHost<'a> {
    model: &'a dyn LanguageModel,
    pub(super) sessions: HashMap<u64, VerifySession<'a>>,
    open: &'a AtomicUsize,
    limit: usize,
}

impl<'a> LmHost<'a> {
    /// `open` counts the sessions of every connection of the worker; `limit` caps it.
    pub fn new(model: &'a dyn LanguageModel, open: &'a AtomicUsize, limit: usize) -> Self {
        LmHost {
            model,
            sessions: HashMap::new(),
            open,
            limit,
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn session(&mut self, id: u64) -> anyhow::Result<&mut VerifySession<'a>> {
        self.sessions.get_mut(&id).ok_or_else(|| {
            anyhow::anyhow!("no open session {id} on this connection (closed, or never opened)")
        })
    }

    /// Handles one message; `emit(payload, compute_ns)` sends each response (several for a
    /// streamed generation, none for `CLOSE`).
    pub fn handle(
        &mut self,
        msg: &[u8],
        emit: &mut dyn FnMut(Vec<u8>, u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut c = Cur { b: msg, at: 0 };
        let op = c.u8()?;
        let id = c.u64()?;
        let t = Instant::now();
        let ns = |t: Instant| t.elapsed().as_nanos() as u64;
        match op {
            OPEN => {
                let (seed, params) = c.params()?;
                let greedy = c.u8()? == 1;
                let prompt = c.rest_u32s()?;
                if prompt.is_empty() {
                    anyhow::bail!("session {id}: an empty prompt");
                }
                // Reopening an id replaces its session; a new one must fit under the limit.
                if self.sessions.remove(&id).is_none()
                    && self.open.fetch_add(1, Ordering::SeqCst) >= self.limit
                {
                    self.open.fetch_sub(1, Ordering::SeqCst);
                    anyhow::bail!(
                        "the worker holds {} sessions already (its limit, --max-sessions)",
                        self.limit
                    );
                }
                let mut s = VerifySession::new(self.model, seed, params, greedy);
                let first = match s.prefill(&prompt) {
                    Ok(t) => t,
                    Err(e) => {
                        self.open.fetch_sub(1, Ordering::SeqCst);
                        return Err(e);
                    }
                };
                self.sessions.insert(id, s);
                emit(first.to_le_bytes().to_vec(), ns(t))
            }
            VERIFY => {
                let n_feed = c.u32()? as usize;
                let n_drafts = c.u32()? as usize;
                let feed = c.u32s(n_feed)?;
                let s = self.session(id)?;
                let qx = if s.greedy {
                    Vec::new()
                } else {
                    c.f32s(n_drafts)?
                };
                let v = s.verify(&feed, n_drafts, &qx)?;
                let compute = ns(t);
                let mut out = (v.accepted as u32).to_le_bytes().to_vec();
                match v.next {
                    Next::Token(tok) => {
                        out.push(0);
                        out.extend_from_slice(&tok.to_le_bytes());
                    }
                    Next::Residual(p) => {
                        out.push(1);
                        for x in p {
                            out.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
                emit(out, compute)
            }
            CALIBRATE => {
                let token = c.u32()?;
                let max = c.u32()? as usize;
                let table = self.session(id)?.calibrate(token, max)?;
                let out: Vec<u8> = table.iter().flat_map(|s| s.to_le_bytes()).collect();
                emit(out, ns(t))
            }
            GENERATE => {
                let (seed, params) = c.params()?;
                let max_new = c.u32()? as usize;
                let stop_at_eos = c.u8()? == 1;
                let prompt = c.rest_u32s()?;
                if prompt.is_empty() || max_new == 0 {
                    anyhow::bail!("session {id}: an empty prompt or max_new_tokens 0");
                }
                let eog = self.model.eog_ids();
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut sess = self.model.new_session();
                let mut feed = prompt;
                let mut n = 0;
                loop {
                    let t = Instant::now();
                    let logits = sess.forward_last(&feed)?;
                    let margin = crate::speculative::top2_margin(&logits);
                    let tok = if params.is_greedy() {
                        sampling::argmax(&logits)?
                    } else {
                        sampling::sample(&sampling::probs(&logits, &params)?, &mut rng)?
                    };
                    n += 1;
                    let last = n >= max_new || (stop_at_eos && eog.contains(&tok));
                    let compute = ns(t);
                    let mut out = vec![last as u8];
                    out.extend_from_slice(&tok.to_le_bytes());
                    out.extend_from_slice(&margin.to_le_bytes());
                    emit(out, compute)?;
                    if last {
                        return Ok(());
                    }
                    feed = vec![tok];
                }
            }
            // No answer: the edge does not wait for one.
            CLOSE => {
                if self.sessions.remove(&id).is_some() {
                    self.open.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(())
            }
            ENCODE => {
                let text = std::str::from_utf8(c.rest())
                    .map_err(|e| anyhow::anyhow!("a prompt that is not UTF-8: {e}"))?;
                let ids = self.model.encode(text)?;
                let mut out = Vec::with_capacity(4 * ids.len());
                put_u32s(&mut out, &ids);
                emit(out, ns(t))
            }
            DECODE => {
                let ids = c.rest_u32s()?;
                emit(self.model.decode(&ids)?.into_bytes(), ns(t))
            }
            k => anyhow::bail!("unknown speculative message {k} (valid: 1..=7)"),
        }
    }
}

impl Drop for LmHost<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(self.sessions.len(), Ordering::SeqCst);
    }
}

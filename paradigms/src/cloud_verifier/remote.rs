//! The edge's side of a verifier in an `ianvs serve` worker: [`RemoteVerifier`] over the
//! edge's [`CloudClient`], the streamed verifier-only generation, and the worker's tokenizer.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    header, put_params, put_u32s, CloudError, CloudVerifier, Cur, Exchanged, Next, Verdict,
    CALIBRATE, CLOSE, DECODE, ENCODE, GENERATE, OPEN, VERIFY,
};
use crate::net::{CloudClient, Miss};
use crate::sampling::SamplingParams;

/// The verifier in an `ianvs serve` worker, reached through the edge's [`CloudClient`]. Each
/// generation is one session id on the worker.
pub struct RemoteVerifier<'c> {
    pub client: &'c mut CloudClient,
    session: u64,
    params: SamplingParams,
    greedy: bool,
    open: bool,
}

/// Session ids: unique per process and connection lifetime (the worker keys by connection).
static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn miss(m: Miss) -> CloudError {
    CloudError::Miss(m)
}

impl<'c> RemoteVerifier<'c> {
    pub fn new(client: &'c mut CloudClient, params: SamplingParams, greedy: bool) -> Self {
        RemoteVerifier {
            client,
            session: 0,
            params,
            greedy,
            open: false,
        }
    }

    /// One request/response with the time split: compute from the worker, the rest of the
    /// round trip is network + queueing, message and frame coding is codec.
    fn ask(
        &mut self,
        payload: Vec<u8>,
        codec_s: f64,
    ) -> Result<(Vec<u8>, Exchanged<()>), CloudError> {
        let r = self.client.request(&payload).map_err(miss)?;
        Ok((
            r.payload,
            Exchanged {
                value: (),
                compute_s: r.compute_s,
                link_s: (r.round_trip_s - r.compute_s).max(0.0),
                codec_s: codec_s + r.framing_s,
                up_bytes: r.wire_up,
                down_bytes: r.wire_down,
            },
        ))
    }
}

impl CloudVerifier for RemoteVerifier<'_> {
    fn open(&mut self, seed: u64, prompt: &[u32]) -> Result<Exchanged<u32>, CloudError> {
        let t = Instant::now();
        self.session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let mut m = header(OPEN, self.session);
        put_params(&mut m, seed, &self.params);
        m.push(self.greedy as u8);
        put_u32s(&mut m, prompt);
        let codec = t.elapsed().as_secs_f64();
        self.open = true;
        let (body, ex) = self.ask(m, codec)?;
        let t = Instant::now();
        let first = Cur { b: &body, at: 0 }.u32()?;
        Ok(ex.with(first, t.elapsed().as_secs_f64()))
    }

    fn calibrate(&mut self, token: u32, max: usize) -> Result<Vec<f64>, CloudError> {
        let mut m = header(CALIBRATE, self.session);
        m.extend_from_slice(&token.to_le_bytes());
        m.extend_from_slice(&(max as u32).to_le_bytes());
        let (body, _) = self.ask(m, 0.0)?;
        let mut c = Cur { b: &body, at: 0 };
        (0..=max).map(|_| Ok(c.f64()?)).collect()
    }

    fn verify(
        &mut self,
        feed: &[u32],
        n_drafts: usize,
        qx: &[f32],
    ) -> Result<Exchanged<Verdict>, CloudError> {
        let t = Instant::now();
        let mut m = header(VERIFY, self.session);
        m.extend_from_slice(&(feed.len() as u32).to_le_bytes());
        m.extend_from_slice(&(n_drafts as u32).to_le_bytes());
        put_u32s(&mut m, feed);
        if !self.greedy {
            for q in qx {
                m.extend_from_slice(&q.to_le_bytes());
            }
        }
        let codec = t.elapsed().as_secs_f64();
        let (body, ex) = self.ask(m, codec)?;
        let t = Instant::now();
        let mut c = Cur { b: &body, at: 0 };
        let accepted = c.u32()? as usize;
        if accepted > n_drafts {
            return Err(CloudError::Fatal(anyhow::anyhow!(
                "the worker accepted {accepted} of {n_drafts} drafts"
            )));
        }
        let next = match c.u8()? {
            0 => Next::Token(c.u32()?),
            1 => {
                let n = (body.len() - c.at) / 4;
                Next::Residual(c.f32s(n)?)
            }
            k => {
                return Err(CloudError::Fatal(anyhow::anyhow!(
                    "unknown verdict kind {k} from the worker"
                )))
            }
        };
        Ok(ex.with(Verdict { accepted, next }, t.elapsed().as_secs_f64()))
    }

    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            let _ = self.client.send_only(&header(CLOSE, self.session));
        }
    }
}

impl Drop for RemoteVerifier<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// One token of a streamed verifier-only generation, as the edge received it.
#[derive(Debug, Clone, Copy)]
pub struct StreamedToken {
    pub token: u32,
    pub margin: f32,
    /// Arrival at the edge, seconds since the request was sent.
    pub arrival_s: f64,
    /// The worker's compute for this token (prefill for the first).
    pub compute_s: f64,
}

/// A verifier-only generation in the worker, streamed token by token.
pub struct Streamed {
    pub tokens: Vec<StreamedToken>,
    pub codec_s: f64,
    pub up_bytes: usize,
    pub down_bytes: usize,
}

/// Asks the worker for a verifier-only generation; every token has the request's deadline.
pub fn generate(
    client: &mut CloudClient,
    seed: u64,
    params: &SamplingParams,
    max_new_tokens: usize,
    stop_at_eos: bool,
    prompt: &[u32],
) -> Result<Streamed, CloudError> {
    let t = Instant::now();
    let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let mut m = header(GENERATE, session);
    put_params(&mut m, seed, params);
    m.extend_from_slice(&(max_new_tokens as u32).to_le_bytes());
    m.push(stop_at_eos as u8);
    put_u32s(&mut m, prompt);
    let mut codec_s = t.elapsed().as_secs_f64();
    let mut tokens = Vec::new();
    let mut bad: Option<anyhow::Error> = None;
    let r = client
        .request_stream(&m, &mut |body, arrival_s, compute_ns| {
            let t = Instant::now();
            let mut c = Cur { b: body, at: 0 };
            let parsed = (|| -> anyhow::Result<(bool, u32, f32)> {
                Ok((c.u8()? == 1, c.u32()?, c.f32()?))
            })();
            codec_s += t.elapsed().as_secs_f64();
            match parsed {
                Ok((last, token, margin)) => {
                    tokens.push(StreamedToken {
                        token,
                        margin,
                        arrival_s,
                        compute_s: compute_ns as f64 / 1e9,
                    });
                    last
                }
                Err(e) => {
                    bad = Some(e);
                    true
                }
            }
        })
        .map_err(miss)?;
    if let Some(e) = bad {
        return Err(CloudError::Fatal(e));
    }
    Ok(Streamed {
        tokens,
        codec_s: codec_s + r.framing_s,
        up_bytes: r.wire_up,
        down_bytes: r.wire_down,
    })
}

/// The worker's tokenizer: text → token ids (off the clock).
pub fn encode(client: &mut CloudClient, text: &str) -> anyhow::Result<Vec<u32>> {
    let mut m = header(ENCODE, 0);
    m.extend_from_slice(text.as_bytes());
    let r = client
        .request(&m)
        .map_err(|e| anyhow::anyhow!("tokenizing a prompt in the worker: {e}"))?;
    Cur {
        b: &r.payload,
        at: 0,
    }
    .rest_u32s()
}

/// The worker's tokenizer: token ids → text (off the clock).
pub fn decode(client: &mut CloudClient, ids: &[u32]) -> anyhow::Result<String> {
    let mut m = header(DECODE, 0);
    put_u32s(&mut m, ids);
    let r = client
        .request(&m)
        .map_err(|e| anyhow::anyhow!("detokenizing an output in the worker: {e}"))?;
    Ok(String::from_utf8_lossy(&r.payload).into_owned())
}

//! A userspace shaping proxy for the real link: sits on loopback between the edge's client and
//! an `ianvs serve` worker, forwards whole wire frames ([`crate::wire`]) and applies to the
//! data frames (requests and responses)
//!
//! - a token-bucket bandwidth cap per direction: a frame of `b` bytes leaves `b · 8 / rate`
//!   after the previous one left (or after it arrived, whichever is later);
//! - a delay queue: it is delivered half an RTT later, the RTT drawn per frame uniform in
//!   `[rtt − jitter, rtt + jitter]` (clamped at 0), order preserved as TCP would;
//!
//! and to every frame, once the fault clock has started (the case's measured loop),
//! - an outage window in which every frame is dropped (the cloud is unreachable);
//! - a loss probability per data frame;
//! - a reset probability per request: both connections are closed.
//!
//! Setup frames (the train split) are forwarded without delay or bandwidth cost: they are not
//! part of what the benchmark measures. This mirrors the emulated link's model, so a test can
//! compare the two; `tc netem` (docs/network.md) shapes the kernel's path instead.
//!
//! Over TLS the proxy cannot see frames ([`Proxy::start_opaque`]): it shapes the byte stream
//! instead, each chunk read as one unit (bandwidth by its length, its own delay draw), and only
//! once the fault clock has started (so the handshake and the setup pass unshaped, as setup
//! frames do in frame mode). Outages drop every chunk and resets close the connections; a
//! loss probability is refused for TLS (a lost chunk corrupts the TLS stream, which is not
//! what a lost packet does: TCP would resend it).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::link::LinkSpec;
use crate::net::FaultSpec;
use crate::wire::MAX_FRAME;

/// What the proxy applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeSpec {
    /// Delay, jitter and bandwidth (the same numbers the emulated link uses); `None`: no shaping.
    pub link: Option<LinkSpec>,
    pub faults: FaultSpec,
    pub seed: u64,
}

/// What the proxy did, for the case's runtime record.
#[derive(Debug, Default, Serialize)]
pub struct ProxyCounters {
    pub connections: AtomicU64,
    pub frames_forwarded: AtomicU64,
    pub frames_dropped_outage: AtomicU64,
    pub frames_dropped_loss: AtomicU64,
    pub resets: AtomicU64,
}

struct Shared {
    spec: ShapeSpec,
    /// Frame-aware (plaintext wire protocol); false: an opaque byte stream (TLS).
    framed: bool,
    clock: Mutex<Option<Instant>>,
    stop: AtomicBool,
    counters: ProxyCounters,
    rng: Mutex<ChaCha8Rng>,
}

impl Shared {
    /// Seconds since the fault clock started, `None` before.
    fn t(&self) -> Option<f64> {
        self.clock.lock().ok()?.map(|t0| t0.elapsed().as_secs_f64())
    }
    fn draw(&self) -> f64 {
        self.rng
            .lock()
            .map(|mut r| r.random::<f64>())
            .unwrap_or(1.0)
    }
}

/// A running proxy; stops accepting when dropped (open connections end with their sockets).
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

const REQUEST: u8 = 4;
const RESPONSE: u8 = 5;

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`, frame by
    /// frame.
    pub fn start(upstream: SocketAddr, spec: ShapeSpec) -> io::Result<Proxy> {
        Self::start_with(upstream, spec, true)
    }

    /// Like [`Proxy::start`] for a stream it cannot parse (TLS): shapes chunks of bytes, from
    /// the start of the fault clock on.
    pub fn start_opaque(upstream: SocketAddr, spec: ShapeSpec) -> io::Result<Proxy> {
        Self::start_with(upstream, spec, false)
    }

    fn start_with(upstream: SocketAddr, spec: ShapeSpec, framed: bool) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5348_4150)),
            framed,
            spec,
            clock: Mutex::new(None),
            stop: AtomicBool::new(false),
            counters: ProxyCounters::default(),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                    else {
                        let _ = client.shutdown(Shutdown::Both);
                        return;
                    };
                    s.counters.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let pair = (client.try_clone(), server.try_clone());
                    let (Ok(c2), Ok(s2)) = pair else { return };
                    let up = {
                        let s = s.clone();
                        let (c, sv) = (c2, server);
                        let ends = (c.try_clone().ok(), sv.try_clone().ok());
                        std::thread::spawn(move || pump(c, sv, true, &s, ends))
                    };
                    let ends = (client.try_clone().ok(), s2.try_clone().ok());
                    pump(s2, client, false, &s, ends);
                    let _ = up.join();
                });
            }
        });
        Ok(Proxy { addr, shared })
    }

    /// Starts the fault clock: outage windows, losses and resets apply from now on.
    pub fn start_clock(&self) {
        if let Ok(mut c) = self.shared.clock.lock() {
            c.get_or_insert_with(Instant::now);
        }
    }

    pub fn counters(&self) -> serde_json::Value {
        serde_json::to_value(&self.shared.counters).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn close(ends: &(Option<TcpStream>, Option<TcpStream>)) {
    for s in [&ends.0, &ends.1].into_iter().flatten() {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Forwards frames from `from` to `to`; `up` is edge → cloud.
fn pump(
    mut from: TcpStream,
    to: TcpStream,
    up: bool,
    s: &Shared,
    ends: (Option<TcpStream>, Option<TcpStream>),
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let mut to = to;
        let ends = (
            ends.0.as_ref().and_then(|e| e.try_clone().ok()),
            ends.1.as_ref().and_then(|e| e.try_clone().ok()),
        );
        std::thread::spawn(move || {
            for (at, bytes) in rx {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                if to.write_all(&bytes).and_then(|_| to.flush()).is_err() {
                    close(&ends);
                    break;
                }
            }
        })
    };
    let mut bucket_free = Instant::now();
    let mut last_delivery = Instant::now();
    loop {
        let (frame, kind, data) = if s.framed {
            let mut len = [0u8; 4];
            if from.read_exact(&mut len).is_err() {
                break;
            }
            let n = u32::from_be_bytes(len);
            if n == 0 || n > MAX_FRAME {
                break;
            }
            let mut frame = vec![0u8; 4 + n as usize];
            frame[..4].copy_from_slice(&len);
            if from.read_exact(&mut frame[4..]).is_err() {
                break;
            }
            let kind = frame[4];
            (frame, kind, kind == REQUEST || kind == RESPONSE)
        } else {
            // Opaque (TLS): whatever arrived is one unit; an edge → cloud chunk stands for a
            // request. Shaped only once the measured loop runs.
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match from.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            chunk.truncate(n);
            let measured = s.t().is_some();
            (chunk, if up { REQUEST } else { RESPONSE }, measured)
        };
        let arrived = Instant::now();
        let f = &s.spec.faults;
        if let Some(t) = s.t() {
            if t >= f.outage_start_s && t < f.outage_end_s {
                s.counters
                    .frames_dropped_outage
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if up && kind == REQUEST && f.reset_probability > 0.0 && s.draw() < f.reset_probability
            {
                s.counters.resets.fetch_add(1, Ordering::Relaxed);
                close(&ends);
                break;
            }
            if data && f.drop_probability > 0.0 && s.draw() < f.drop_probability {
                s.counters
                    .frames_dropped_loss
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let mut at = arrived;
        if let (true, Some(l)) = (data, &s.spec.link) {
            let mbps = if up { l.uplink_mbps } else { l.downlink_mbps };
            let depart = bucket_free.max(arrived)
                + Duration::from_secs_f64(frame.len() as f64 * 8.0 / (mbps * 1e6));
            bucket_free = depart;
            let j = l.jitter_ms;
            let jitter = if j > 0.0 {
                s.rng
                    .lock()
                    .map(|mut r| r.random_range(-j..=j))
                    .unwrap_or(0.0)
            } else {
                0.0
            };
            let one_way = (l.rtt_ms + jitter).max(0.0) / 2e3;
            at = depart + Duration::from_secs_f64(one_way);
        }
        // TCP delivers in order.
        at = at.max(last_delivery);
        last_delivery = at;
        s.counters.frames_forwarded.fetch_add(1, Ordering::Relaxed);
        if tx.send((at, frame)).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    close(&ends);
}

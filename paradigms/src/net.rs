//! The real edge↔cloud link (link module `Tcp`): the edge side of the wire protocol
//! ([`crate::wire`]) over TCP to an `ianvs serve` worker, started by ianvs itself on loopback
//! (`spawn: local`) or reached at `endpoint: host:port`.
//!
//! Every wait has a deadline: connecting, the handshake, the setup (the worker trains the cloud
//! model) and each request. A request that misses its deadline, a refused connection or a reset
//! is a [`Miss`]; joint inference then answers from the edge (`on_cloud_failure: fallback`) or
//! fails the case (`fail`). Reconnects are counted. Faults (an outage window, frame drops,
//! connection resets) and shaping (delay, jitter, bandwidth) are applied by the userspace proxy
//! in [`crate::shaping`], which sits between this client and the worker when configured.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::hp::{HpKind, HpSpec, Hyperparameters};
use crate::link::{LinkSpec, Timing};
use crate::shaping::{Proxy, ShapeSpec};
use crate::wire::{Frame, MAX_FRAME, VERSION};

/// `spawn` values of the `Tcp` link.
pub const SPAWN: &[&str] = &["local", "none"];
/// `on_cloud_failure` values.
pub const ON_FAILURE: &[&str] = &["fallback", "fail"];

/// What to do when the cloud misses a request's deadline or cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Answer from the edge model (KubeEdge's edge autonomy); the record is marked `fallback`.
    Fallback,
    /// Fail the case with the error.
    Fail,
}

/// The parameters of a `Tcp` link module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealLinkSpec {
    /// `host:port` of a running `ianvs serve`; empty with `spawn: local`.
    pub endpoint: String,
    /// Start a worker on loopback for the case (and stop it at the end).
    pub spawn_local: bool,
    /// Handshake token (`IANVS_TOKEN` when empty).
    #[serde(skip)]
    pub token: String,
    /// Per-request deadline.
    pub deadline_ms: f64,
    /// Deadline for the setup (the worker builds and trains the cloud model).
    pub setup_timeout_s: f64,
    pub on_failure: OnFailure,
    /// Shaping and faults applied by the userspace proxy; `None`: direct connection.
    pub shape: Option<ShapeSpec>,
    /// PEM file of the CA that signed the worker's certificate; empty: no TLS.
    pub tls_ca: String,
    /// Name expected in the worker's certificate (default: the endpoint's host).
    pub tls_server_name: String,
}

impl RealLinkSpec {
    pub fn from_hps(h: &Hyperparameters) -> anyhow::Result<Self> {
        let endpoint = h.str("endpoint")?.trim().to_string();
        let spawn_local = h.str("spawn")? == "local";
        if spawn_local && !endpoint.is_empty() {
            anyhow::bail!("link Tcp: give either `endpoint: {endpoint}` (a running `ianvs serve`) or `spawn: local`, not both (set `spawn: none` to use the endpoint)");
        }
        if !spawn_local && endpoint.is_empty() {
            anyhow::bail!(
                "link Tcp: `spawn: none` needs `endpoint: host:port` of a running `ianvs serve`"
            );
        }
        let mut token = h.str("token")?.to_string();
        if token.is_empty() {
            token = std::env::var("IANVS_TOKEN").unwrap_or_default();
        }
        let shaping = h.str("shaping")? == "proxy";
        let faults = FaultSpec {
            outage_start_s: h.float("outage_start_s")?,
            outage_end_s: h.float("outage_end_s")?,
            drop_probability: h.float("drop_probability")?,
            reset_probability: h.float("reset_probability")?,
        };
        if faults.outage_end_s < faults.outage_start_s {
            anyhow::bail!(
                "link Tcp: outage_end_s ({}) is before outage_start_s ({})",
                faults.outage_end_s,
                faults.outage_start_s
            );
        }
        let link = shaping.then(|| emulated_twin(h)).transpose()?;
        let shape = (shaping || faults.any()).then(|| ShapeSpec {
            link,
            faults,
            seed: h.u64("seed").unwrap_or(0),
        });
        let spec = RealLinkSpec {
            endpoint,
            spawn_local,
            token,
            deadline_ms: h.float("deadline_ms")?,
            setup_timeout_s: h.float("setup_timeout_s")?,
            on_failure: if h.str("on_cloud_failure")? == "fail" {
                OnFailure::Fail
            } else {
                OnFailure::Fallback
            },
            shape,
            tls_ca: h.str("tls_ca")?.to_string(),
            tls_server_name: h.str("tls_server_name")?.to_string(),
        };
        if !spec.tls_ca.is_empty() {
            if spec.spawn_local {
                anyhow::bail!("link Tcp: `tls_ca` is for a remote worker (`spawn: none` + `endpoint`); a worker spawned on loopback needs no TLS");
            }
            if spec
                .shape
                .as_ref()
                .is_some_and(|s| s.faults.drop_probability > 0.0)
            {
                anyhow::bail!("link Tcp: `drop_probability` cannot apply to a TLS link (the proxy cannot see frames inside TLS, and dropping bytes would corrupt the stream rather than lose a message): drop it, or shape with tc netem (docs/network.md)");
            }
        }
        Ok(spec)
    }
}

/// Scheduled faults, in seconds since the case's measured loop began.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaultSpec {
    /// The cloud is unreachable (every frame is dropped) for `start <= t < end`.
    pub outage_start_s: f64,
    pub outage_end_s: f64,
    /// Each request or response frame is lost with this probability.
    pub drop_probability: f64,
    /// Each request resets the connection (both sides closed) with this probability.
    pub reset_probability: f64,
}

impl FaultSpec {
    pub fn any(&self) -> bool {
        self.outage_end_s > self.outage_start_s
            || self.drop_probability > 0.0
            || self.reset_probability > 0.0
    }
}

/// The emulated link with the same parameters as the `Tcp` link's shaping: what the
/// emulation predicts for this link (`Tcp`'s constructor returns it).
pub fn emulated_twin(h: &Hyperparameters) -> anyhow::Result<LinkSpec> {
    let spec = LinkSpec {
        rtt_ms: h.float("rtt_ms")?,
        jitter_ms: h.float("jitter_ms")?,
        uplink_mbps: h.float("uplink_mbps")?,
        downlink_mbps: h.float("downlink_mbps")?,
        timing: Timing::Sleep,
        seed: h.u64("seed")?,
    };
    spec.validate()?;
    Ok(spec)
}

/// Hyperparameters of the `Tcp` link module.
pub fn tcp_link_hps() -> Vec<HpSpec> {
    vec![
        HpSpec::new("spawn", HpKind::Choice(SPAWN), json!("local"), "local: ianvs starts an `ianvs serve` worker on loopback for the case and stops it at the end; none: connect to `endpoint`"),
        HpSpec::new("endpoint", HpKind::Text, json!(""), "host:port of a running `ianvs serve` (with spawn: none)"),
        HpSpec::new("token", HpKind::Text, json!(""), "handshake token of the worker (default: the IANVS_TOKEN environment variable)"),
        HpSpec::new("tls_ca", HpKind::Text, json!(""), "PEM file of the CA that signed the worker's certificate (`ianvs serve --tls-cert`): the link then uses TLS; empty: plaintext"),
        HpSpec::new("tls_server_name", HpKind::Text, json!(""), "name (DNS or IP) the worker's certificate must carry (default: the endpoint's host)"),
        HpSpec::new("deadline_ms", HpKind::Float { min: 1.0, max: 600_000.0 }, json!(2000.0), "per-request deadline: a cloud answer later than this is a miss"),
        HpSpec::new("setup_timeout_s", HpKind::Float { min: 1.0, max: 86_400.0 }, json!(900.0), "deadline for the worker to build and train the cloud model at connect"),
        HpSpec::new("on_cloud_failure", HpKind::Choice(ON_FAILURE), json!("fallback"), "fallback: answer from the edge when the cloud misses the deadline or is down (counted in fallback-ratio); fail: fail the case"),
        HpSpec::new("shaping", HpKind::Choice(&["none", "proxy"]), json!("none"), "proxy: route through ianvs's userspace shaping proxy applying rtt_ms, jitter_ms and the bandwidths; none: direct"),
        HpSpec::new("rtt_ms", HpKind::Float { min: 0.0, max: 600_000.0 }, json!(0.0), "shaping: added round-trip time, milliseconds (half per direction)"),
        HpSpec::new("jitter_ms", HpKind::Float { min: 0.0, max: 600_000.0 }, json!(0.0), "shaping: each frame's RTT is uniform in [rtt − jitter, rtt + jitter], clamped at 0"),
        HpSpec::new("uplink_mbps", HpKind::Float { min: 1e-6, max: 1e6 }, json!(1e6), "shaping: edge → cloud token-bucket rate, Mbit/s"),
        HpSpec::new("downlink_mbps", HpKind::Float { min: 1e-6, max: 1e6 }, json!(1e6), "shaping: cloud → edge token-bucket rate, Mbit/s"),
        HpSpec::new("outage_start_s", HpKind::Float { min: 0.0, max: 1e9 }, json!(0.0), "fault: the cloud is unreachable from this many seconds into the measured loop ..."),
        HpSpec::new("outage_end_s", HpKind::Float { min: 0.0, max: 1e9 }, json!(0.0), "fault: ... until this many (equal to the start: no outage)"),
        HpSpec::new("drop_probability", HpKind::Float { min: 0.0, max: 1.0 }, json!(0.0), "fault: each request or response frame is lost with this probability"),
        HpSpec::new("reset_probability", HpKind::Float { min: 0.0, max: 1.0 }, json!(0.0), "fault: each request resets the connection with this probability"),
        HpSpec::new("seed", HpKind::Int { min: 0, max: i64::MAX }, None, "seeds jitter and fault draws (default: the job seed)"),
    ]
}

/// Why the cloud gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Miss {
    /// No answer before the deadline.
    Deadline,
    /// The connection failed (refused, reset, closed); the text says how.
    Down(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Deadline => write!(f, "no cloud answer within the deadline"),
            Miss::Down(why) => write!(f, "cloud unreachable: {why}"),
        }
    }
}

/// A request on the wire: its id, the seconds spent framing it, its bytes and when it left.
struct Sent {
    id: u64,
    framing_s: f64,
    wire_up: usize,
    at: Instant,
}

/// A cloud answer with the time split the edge can measure.
#[derive(Debug, Clone)]
pub struct Reply {
    pub payload: Vec<u8>,
    /// Request sent → response received, wall seconds.
    pub round_trip_s: f64,
    /// The worker's compute time for this request (reported in the response).
    pub compute_s: f64,
    /// Frame encode/decode time on the edge.
    pub framing_s: f64,
    /// Bytes on the wire including frame headers.
    pub wire_up: usize,
    pub wire_down: usize,
}

/// Counters of one client over a case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkCounters {
    pub requests: u64,
    pub answered: u64,
    pub deadline_misses: u64,
    pub connection_failures: u64,
    pub reconnects: u64,
    pub stale_responses_skipped: u64,
}

/// Reads frames from a socket with a deadline without losing a partly received frame.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next frame, or `Ok(None)` when `until` passes first.
    fn next(&mut self, s: &mut Stream, until: Instant) -> io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if len == 0 || len > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("ianvs wire: frame length {len} outside 1..={MAX_FRAME}"),
                    ));
                }
                let total = 4 + len as usize;
                if self.buf.len() >= total {
                    let f = Frame::decode(&self.buf[4..total]);
                    self.buf.drain(..total);
                    return f.map(Some);
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            s.sock()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; 64 * 1024];
            match s.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the worker closed the connection",
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// TLS settings of the edge's client: the CA that signed the worker's certificate and the name
/// the certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca` and expects `server_name` (a DNS name or an
    /// IP address) in the worker's certificate.
    pub fn new(ca: &std::path::Path, server_name: &str) -> anyhow::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|e| anyhow::anyhow!("link Tcp: tls_ca {}: {e}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| anyhow::anyhow!("link Tcp: tls_ca {}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| anyhow::anyhow!("link Tcp: tls_ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            anyhow::bail!("link Tcp: tls_ca {} holds no certificate", ca.display());
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server_name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| anyhow::anyhow!("link Tcp: tls_server_name \"{server_name}\": {e}"))?;
        Ok(TlsClient {
            config: std::sync::Arc::new(config),
            server_name,
        })
    }
}

/// The client's socket, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn sock(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

struct Conn {
    stream: Stream,
    reader: FrameReader,
}

/// The edge's client of one worker (through the shaping proxy when configured).
pub struct CloudClient {
    addr: SocketAddr,
    tls: Option<TlsClient>,
    token: String,
    setup: Vec<u8>,
    deadline: Duration,
    setup_timeout: Duration,
    conn: Option<Conn>,
    next_id: u64,
    ever_connected: bool,
    pub counters: LinkCounters,
    /// The worker's `Ready` answer (model parameters, classes, training time, device).
    pub ready: serde_json::Value,
}

impl CloudClient {
    /// Connects, hands the worker its setup and waits (up to `setup_timeout`) until it is ready.
    pub fn connect(
        addr: SocketAddr,
        tls: Option<TlsClient>,
        token: &str,
        setup: Vec<u8>,
        deadline: Duration,
        setup_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut c = CloudClient {
            addr,
            tls,
            token: token.to_string(),
            setup,
            deadline,
            setup_timeout,
            conn: None,
            next_id: 1,
            ever_connected: false,
            counters: LinkCounters::default(),
            ready: serde_json::Value::Null,
        };
        c.open(setup_timeout)
            .map_err(|e| anyhow::anyhow!("cannot set up the cloud worker at {addr}: {e}"))?;
        Ok(c)
    }

    /// Connects, shakes hands and sends the setup, all within `budget`.
    fn open(&mut self, budget: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        let until = t0 + budget;
        let connect_wait = self.deadline.max(Duration::from_millis(200)).min(budget);
        let sock = TcpStream::connect_timeout(&self.addr, connect_wait)
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream = match &self.tls {
            None => Stream::Plain(sock),
            Some(t) => {
                let conn = rustls::ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(|e| format!("tls: {e}"))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock)))
            }
        };
        let handshake_until = until.min(t0 + connect_wait.max(Duration::from_secs(5)));
        let setup_wait = until.saturating_duration_since(Instant::now());
        let _ = stream.sock().set_nodelay(true);
        stream
            .sock()
            .set_write_timeout(Some(setup_wait.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let mut reader = FrameReader::default();
        Frame::Hello {
            version: VERSION,
            token: self.token.as_bytes().to_vec(),
        }
        .write_to(&mut stream)
        .map_err(|e| format!("handshake: {e}"))?;
        match reader.next(&mut stream, handshake_until) {
            Ok(Some(Frame::Welcome)) => {}
            Ok(Some(Frame::Refused { reason })) => return Err(format!("refused: {reason}")),
            Ok(Some(f)) => return Err(format!("unexpected answer to the handshake: {f:?}")),
            Ok(None) => return Err("no answer to the handshake before the deadline".into()),
            Err(e) => return Err(format!("handshake: {e}")),
        }
        Frame::Setup {
            payload: self.setup.clone(),
        }
        .write_to(&mut stream)
        .map_err(|e| format!("setup: {e}"))?;
        match reader.next(&mut stream, until) {
            Ok(Some(Frame::Ready { json })) => {
                self.ready = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
            }
            Ok(Some(Frame::Refused { reason })) => {
                return Err(format!("the worker could not build the model: {reason}"))
            }
            Ok(Some(f)) => return Err(format!("unexpected answer to the setup: {f:?}")),
            Ok(None) => {
                return Err(format!(
                    "the worker was not ready within {:.1} s",
                    budget.as_secs_f64()
                ))
            }
            Err(e) => return Err(format!("setup: {e}")),
        }
        let _ = stream.sock().set_write_timeout(Some(self.deadline));
        if self.ever_connected {
            self.counters.reconnects += 1;
        }
        self.ever_connected = true;
        self.conn = Some(Conn { stream, reader });
        Ok(())
    }

    /// Connects when not connected (a reconnect may not wait longer than a request's own
    /// deadline), frames `payload` under a new id and sends it.
    fn send_request(&mut self, payload: &[u8]) -> Result<Sent, Miss> {
        if self.conn.is_none() {
            if let Err(e) = self.open(self.deadline) {
                self.counters.connection_failures += 1;
                return Err(Miss::Down(e));
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let t = Instant::now();
        let frame = Frame::Request {
            id,
            payload: payload.to_vec(),
        }
        .encode();
        let framing_s = t.elapsed().as_secs_f64();
        let conn = self.conn.as_mut().expect("connected above");
        let at = Instant::now();
        if let Err(e) = conn
            .stream
            .write_all(&frame)
            .and_then(|_| conn.stream.flush())
        {
            self.conn = None;
            self.counters.connection_failures += 1;
            return Err(Miss::Down(format!("send: {e}")));
        }
        Ok(Sent {
            id,
            framing_s,
            wire_up: frame.len(),
            at,
        })
    }

    /// Sends one request and waits for its answer until the deadline. A broken connection is
    /// reopened (within the same deadline) at the next request.
    pub fn request(&mut self, payload: &[u8]) -> Result<Reply, Miss> {
        self.counters.requests += 1;
        let until = Instant::now() + self.deadline;
        let Sent {
            id,
            mut framing_s,
            wire_up,
            at: t_sent,
        } = self.send_request(payload)?;
        let conn = self.conn.as_mut().expect("sent above");
        loop {
            match conn.reader.next(&mut conn.stream, until) {
                Ok(Some(Frame::Response {
                    id: rid,
                    compute_ns,
                    payload,
                })) if rid == id => {
                    let round_trip_s = t_sent.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let wire_down = Frame::Response {
                        id: rid,
                        compute_ns,
                        payload: Vec::new(),
                    }
                    .encode()
                    .len()
                        + payload.len();
                    framing_s += t.elapsed().as_secs_f64();
                    self.counters.answered += 1;
                    return Ok(Reply {
                        payload,
                        round_trip_s,
                        compute_s: compute_ns as f64 / 1e9,
                        framing_s,
                        wire_up,
                        wire_down,
                    });
                }
                // An answer to an earlier request that missed its deadline.
                Ok(Some(Frame::Response { .. })) => self.counters.stale_responses_skipped += 1,
                Ok(Some(f)) => {
                    self.conn = None;
                    self.counters.connection_failures += 1;
                    return Err(Miss::Down(format!("unexpected frame {f:?}")));
                }
                Ok(None) => {
                    self.counters.deadline_misses += 1;
                    return Err(Miss::Deadline);
                }
                Err(e) => {
                    self.conn = None;
                    self.counters.connection_failures += 1;
                    return Err(Miss::Down(e.to_string()));
                }
            }
        }
    }

    /// Sends a request without waiting for an answer (the worker sends none for such
    /// messages, e.g. closing a session; one that came would be skipped as stale). Fails only
    /// when the connection is down (it does not reconnect).
    pub fn send_only(&mut self, payload: &[u8]) -> Result<(), Miss> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Miss::Down("not connected".into()))?;
        let id = self.next_id;
        self.next_id += 1;
        let frame = Frame::Request {
            id,
            payload: payload.to_vec(),
        }
        .encode();
        if let Err(e) = conn
            .stream
            .write_all(&frame)
            .and_then(|_| conn.stream.flush())
        {
            self.conn = None;
            return Err(Miss::Down(format!("send: {e}")));
        }
        Ok(())
    }

    /// Sends one request whose answer comes as a stream of responses with its id; `on_frame`
    /// gets each payload, its arrival (seconds since the request was sent) and the worker's
    /// compute time, and returns true on the last one. Every response has the deadline,
    /// counted from the previous one (or from sending).
    pub fn request_stream(
        &mut self,
        payload: &[u8],
        on_frame: &mut dyn FnMut(&[u8], f64, u64) -> bool,
    ) -> Result<Reply, Miss> {
        self.counters.requests += 1;
        let Sent {
            id,
            mut framing_s,
            wire_up,
            at: t_sent,
        } = self.send_request(payload)?;
        let conn = self.conn.as_mut().expect("sent above");
        let mut wire_down = 0;
        let mut compute_ns_total = 0u64;
        let mut until = t_sent + self.deadline;
        loop {
            match conn.reader.next(&mut conn.stream, until) {
                Ok(Some(Frame::Response {
                    id: rid,
                    compute_ns,
                    payload,
                })) if rid == id => {
                    let arrival = t_sent.elapsed().as_secs_f64();
                    wire_down += crate::wire::RESPONSE_HEADER_BYTES + payload.len();
                    compute_ns_total += compute_ns;
                    let t = Instant::now();
                    let last = on_frame(&payload, arrival, compute_ns);
                    framing_s += t.elapsed().as_secs_f64();
                    if last {
                        self.counters.answered += 1;
                        return Ok(Reply {
                            payload: Vec::new(),
                            round_trip_s: arrival,
                            compute_s: compute_ns_total as f64 / 1e9,
                            framing_s,
                            wire_up,
                            wire_down,
                        });
                    }
                    until = Instant::now() + self.deadline;
                }
                Ok(Some(Frame::Response { .. })) => self.counters.stale_responses_skipped += 1,
                Ok(Some(f)) => {
                    self.conn = None;
                    self.counters.connection_failures += 1;
                    return Err(Miss::Down(format!("unexpected frame {f:?}")));
                }
                Ok(None) => {
                    self.counters.deadline_misses += 1;
                    return Err(Miss::Deadline);
                }
                Err(e) => {
                    self.conn = None;
                    self.counters.connection_failures += 1;
                    return Err(Miss::Down(e.to_string()));
                }
            }
        }
    }

    /// The worker's load report, or `None` if it does not answer within the deadline.
    pub fn stats(&mut self) -> Option<serde_json::Value> {
        let conn = self.conn.as_mut()?;
        Frame::StatsQuery.write_to(&mut conn.stream).ok()?;
        let until = Instant::now() + self.deadline.max(Duration::from_secs(2));
        loop {
            match conn.reader.next(&mut conn.stream, until).ok()?? {
                Frame::Stats { json } => return serde_json::from_str(&json).ok(),
                Frame::Response { .. } => continue,
                _ => return None,
            }
        }
    }

    pub fn setup_timeout(&self) -> Duration {
        self.setup_timeout
    }
}

/// A worker process started by ianvs on loopback (`spawn: local`). It runs in its own process
/// group (a Ctrl-C at the terminal reaches ianvs, which stops it), is killed when this value
/// drops, and exits by itself when ianvs dies (it watches its stdin, a pipe from ianvs).
pub struct LocalWorker {
    child: std::sync::Mutex<Child>,
    pub addr: SocketAddr,
    pub token: String,
}

impl LocalWorker {
    /// Starts `ianvs serve` on a free loopback port and waits (up to 60 s) for its address.
    pub fn spawn(extra_args: &[String]) -> anyhow::Result<Self> {
        let exe = match std::env::var_os("IANVS_EXE") {
            Some(p) => std::path::PathBuf::from(p),
            None => std::env::current_exe()?,
        };
        let token = random_token();
        let mut cmd = Command::new(&exe);
        // The token goes by environment, not argv (other users can read argv).
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(extra_args)
            .env("IANVS_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot start the cloud worker `{} serve`: {e}",
                exe.display()
            )
        })?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(a) = line.strip_prefix("ianvs serve: listening on ") {
                        let addr = a.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "the cloud worker `{} serve` did not report its address within 60 s",
                    exe.display()
                );
            }
        };
        let addr = resolve(&addr)?;
        Ok(LocalWorker {
            child: std::sync::Mutex::new(child),
            addr,
            token,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().map_or(0, |c| c.id())
    }

    /// Whether the process still runs.
    pub fn is_alive(&self) -> bool {
        self.child
            .lock()
            .is_ok_and(|mut c| matches!(c.try_wait(), Ok(None)))
    }

    /// The job's worker: started by the first case that needs one and shared by every later
    /// case of the job (a worker hosts each distinct setup once, so cases with the same cloud
    /// model or verifier do not train or load it again); stopped when the job ends. If it has
    /// died, the case gets a worker of its own.
    pub fn for_job(cache: &crate::paradigm::JobCache) -> anyhow::Result<Arc<LocalWorker>> {
        let shared =
            cache.get_or_try_insert("ianvs-serve spawn: local", || LocalWorker::spawn(&[]))?;
        if shared.is_alive() {
            return Ok(shared);
        }
        Ok(Arc::new(LocalWorker::spawn(&[])?))
    }
}

impl Drop for LocalWorker {
    fn drop(&mut self) {
        if let Ok(c) = self.child.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `host:port` to a socket address, with a clear error.
pub fn resolve(endpoint: &str) -> anyhow::Result<SocketAddr> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("link Tcp: endpoint \"{endpoint}\" is not host:port ({e})"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("link Tcp: endpoint \"{endpoint}\" resolves to no address"))
}

/// 128 random bits as hex, from the OS.
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if ok.is_err() {
        // No /dev/urandom: seed from the clock and pid (still unguessable enough for loopback).
        use rand::{RngCore, SeedableRng};
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ ((std::process::id() as u64) << 32);
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Everything a joint-inference case holds for a real link: the worker (when spawned), the
/// proxy (when shaping or faults are set) and the client.
pub struct RealLink {
    pub spec: RealLinkSpec,
    /// The job's spawned worker (shared by its cases), when `spawn: local`.
    pub worker: Option<Arc<LocalWorker>>,
    pub proxy: Option<Proxy>,
    pub client: CloudClient,
    /// The worker's address (not the proxy's).
    pub worker_addr: SocketAddr,
}

impl RealLink {
    /// Starts (or reaches) the worker, the proxy if any, and hands the worker its setup. A
    /// spawned worker is the job's ([`LocalWorker::for_job`]).
    pub fn open(
        spec: RealLinkSpec,
        setup: Vec<u8>,
        job: &crate::paradigm::JobCache,
    ) -> anyhow::Result<Self> {
        let (worker, addr, token) = if spec.spawn_local {
            let w = LocalWorker::for_job(job)?;
            let (a, t) = (w.addr, w.token.clone());
            (Some(w), a, t)
        } else {
            (None, resolve(&spec.endpoint)?, spec.token.clone())
        };
        // Over TLS the proxy shapes the byte stream (it cannot see frames).
        let proxy = spec
            .shape
            .clone()
            .map(|s| match spec.tls_ca.is_empty() {
                true => Proxy::start(addr, s),
                false => Proxy::start_opaque(addr, s),
            })
            .transpose()?;
        let via = proxy.as_ref().map_or(addr, |p| p.addr);
        let tls = match spec.tls_ca.is_empty() {
            true => None,
            false => {
                let host = spec.endpoint.rsplit_once(':').map_or("", |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = match spec.tls_server_name.is_empty() {
                    true => host,
                    false => spec.tls_server_name.as_str(),
                };
                Some(TlsClient::new(std::path::Path::new(&spec.tls_ca), name)?)
            }
        };
        let client = CloudClient::connect(
            via,
            tls,
            &token,
            setup,
            Duration::from_secs_f64(spec.deadline_ms / 1e3),
            Duration::from_secs_f64(spec.setup_timeout_s),
        )?;
        Ok(RealLink {
            spec,
            worker,
            proxy,
            client,
            worker_addr: addr,
        })
    }

    /// Starts the fault clock (outage windows count from here).
    pub fn start_clock(&self) {
        if let Some(p) = &self.proxy {
            p.start_clock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A minimal wire-protocol peer for the client's tests: handshake, setup → ready, and each
    /// request answered after `delays[i]` (the payload echoed back).
    fn peer(delays: Vec<Duration>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut delays = delays.into_iter();
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let Ok(Frame::Hello { .. }) = Frame::read_from(&mut s) else {
                    continue;
                };
                Frame::Welcome.write_to(&mut s).unwrap();
                loop {
                    match Frame::read_from(&mut s) {
                        Ok(Frame::Setup { .. }) => Frame::Ready {
                            json: r#"{"parameters": 7}"#.into(),
                        }
                        .write_to(&mut s)
                        .unwrap(),
                        Ok(Frame::Request { id, payload }) => {
                            std::thread::sleep(delays.next().unwrap_or_default());
                            let f = Frame::Response {
                                id,
                                compute_ns: 1_000,
                                payload,
                            };
                            if f.write_to(&mut s).is_err() {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
            }
        });
        addr
    }

    fn client(addr: SocketAddr, deadline_ms: u64) -> CloudClient {
        CloudClient::connect(
            addr,
            None,
            "",
            vec![0; 4],
            Duration::from_millis(deadline_ms),
            Duration::from_secs(30),
        )
        .unwrap()
    }

    #[test]
    fn a_late_answer_is_a_deadline_miss_and_is_skipped_afterwards() {
        // Answered 350 ms late with a 250 ms deadline; the second request is sent at 250 ms and
        // answered right after the first, at about 350 ms.
        let addr = peer(vec![Duration::from_millis(350), Duration::ZERO]);
        let mut c = client(addr, 250);
        assert_eq!(c.ready["parameters"], 7);
        assert_eq!(c.request(b"late").unwrap_err(), Miss::Deadline);
        // The first answer arrives while waiting for the second: skipped by id.
        let r = c.request(b"second").unwrap();
        assert_eq!(r.payload, b"second");
        assert!((r.compute_s - 1e-6).abs() < 1e-12);
        assert_eq!(c.counters.stale_responses_skipped, 1);
        assert_eq!((c.counters.deadline_misses, c.counters.answered), (1, 1));
    }

    #[test]
    fn a_dead_peer_is_a_miss_not_a_hang_and_reconnects_are_counted() {
        let addr = peer(vec![]);
        let mut c = client(addr, 500);
        // Break the connection from our side; the next request reconnects.
        c.conn
            .as_ref()
            .unwrap()
            .stream
            .sock()
            .shutdown(std::net::Shutdown::Both)
            .unwrap();
        assert!(matches!(c.request(b"x"), Err(Miss::Down(_))));
        assert_eq!(c.request(b"y").unwrap().payload, b"y");
        assert_eq!(c.counters.reconnects, 1);
        // Nobody listening: refused at once.
        let gone = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        c.addr = gone;
        c.conn = None;
        let t = Instant::now();
        assert!(matches!(c.request(b"z"), Err(Miss::Down(_))));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_proxy_delays_by_the_rtt_and_caps_bandwidth() {
        let addr = peer(vec![]);
        let link = LinkSpec {
            rtt_ms: 40.0,
            jitter_ms: 0.0,
            uplink_mbps: 1.0,
            downlink_mbps: 100.0,
            timing: Timing::Sleep,
            seed: 0,
        };
        let spec = ShapeSpec {
            link: Some(link),
            faults: FaultSpec {
                outage_start_s: 0.0,
                outage_end_s: 0.0,
                drop_probability: 0.0,
                reset_probability: 0.0,
            },
            seed: 1,
        };
        let proxy = Proxy::start(addr, spec).unwrap();
        let mut c = client(proxy.addr, 5_000);
        // 5,000 payload bytes + 13 header bytes up at 1 Mbit/s: 40.1 ms; back at 100 Mbit/s:
        // 0.4 ms; plus 40 ms RTT.
        let r = c.request(&[7u8; 5000]).unwrap();
        let predicted = 0.040 + 5013.0 * 8.0 / 1e6 + 5021.0 * 8.0 / 100e6;
        assert!(
            r.round_trip_s >= predicted,
            "{} < {predicted}",
            r.round_trip_s
        );
        // Generous: a busy 2-core machine may add scheduling delay, never remove time.
        assert!(r.round_trip_s < predicted + 0.25, "{}", r.round_trip_s);
    }

    #[test]
    fn an_outage_drops_every_frame_until_it_ends() {
        let addr = peer(vec![]);
        let spec = ShapeSpec {
            link: None,
            faults: FaultSpec {
                outage_start_s: 0.0,
                outage_end_s: 0.6,
                drop_probability: 0.0,
                reset_probability: 0.0,
            },
            seed: 1,
        };
        let proxy = Proxy::start(addr, spec).unwrap();
        let mut c = client(proxy.addr, 200);
        assert_eq!(c.request(b"before").unwrap().payload, b"before");
        proxy.start_clock();
        assert_eq!(c.request(b"during").unwrap_err(), Miss::Deadline);
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(c.request(b"after").unwrap().payload, b"after");
        assert_eq!(proxy.counters()["frames_dropped_outage"], 1);
    }

    #[test]
    fn drops_are_deadline_misses_and_resets_break_the_connection() {
        let faults = |drop_probability, reset_probability| ShapeSpec {
            link: None,
            faults: FaultSpec {
                outage_start_s: 0.0,
                outage_end_s: 0.0,
                drop_probability,
                reset_probability,
            },
            seed: 3,
        };
        let proxy = Proxy::start(peer(vec![]), faults(1.0, 0.0)).unwrap();
        let mut c = client(proxy.addr, 200);
        proxy.start_clock();
        assert_eq!(c.request(b"lost").unwrap_err(), Miss::Deadline);
        assert_eq!(proxy.counters()["frames_dropped_loss"], 1);

        let proxy = Proxy::start(peer(vec![]), faults(0.0, 1.0)).unwrap();
        let mut c = client(proxy.addr, 2_000);
        proxy.start_clock();
        let t = Instant::now();
        assert!(matches!(c.request(b"reset"), Err(Miss::Down(_))));
        // The next request reconnects (the handshake and setup pass; its request is reset again).
        assert!(matches!(c.request(b"again"), Err(Miss::Down(_))));
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(c.counters.reconnects, 1);
        assert_eq!(proxy.counters()["resets"], 2);
        assert_eq!(proxy.counters()["connections"], 2);
    }
}

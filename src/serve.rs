//! `ianvs serve`: the cloud worker of a real edge↔cloud link (issue 14).
//!
//! It speaks the wire protocol of `ianvs_paradigms::wire` over TCP (tokio, one task per
//! connection). An edge connects, says `Hello` (version + token), sends a `Setup` with the
//! cloud model's module spec, the data shape, the seed and the train split; the worker builds the
//! model through the same registry as `ianvs run`, trains it once per distinct setup (later
//! connections with the same setup share it) and answers `Ready`. Then each `Request` carries
//! an encoded sample; the worker decodes it with the case's codec, runs the model (on a blocking
//! thread, so connections are served concurrently) and answers with the 8-byte answer and its
//! own compute time. `StatsQuery` returns its load: requests served, queue depth (requests
//! received and not yet answered), compute time, connections, open verifier sessions.
//!
//! A `Setup` naming a `verifier` (speculative decoding) loads that language model instead, once
//! per distinct setup; each connection then gets a thread that owns its generations' sessions
//! (KV caches) and answers the messages of `ianvs_paradigms::cloud_verifier` (open, verify,
//! calibrate, a streamed verifier-only generation, close, tokenize). The sessions are freed on
//! `CLOSE` and when the connection ends; `--max-sessions` caps them over all connections.
//!
//! Binding: loopback by default; any other address requires a token (given with `--token` or
//! `IANVS_TOKEN`, else generated and printed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ianvs_paradigms::cloud_verifier::{LmHost, DEFAULT_MAX_SESSIONS};
use ianvs_paradigms::link::encode_answer;
use ianvs_paradigms::modules::{BaseModel, BuildContext, LanguageModel, WorkContext};
use ianvs_paradigms::registry::Constructor;
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::single_task::argmax;
use ianvs_paradigms::wire::{check_hello, Frame, SetupHeader, MAX_FRAME};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// `ianvs serve` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port). Any non-loopback address
    /// requires a token.
    #[arg(long, default_value = "127.0.0.1:7447", value_name = "ADDR")]
    pub bind: String,
    /// The token edges must present. Default: `IANVS_TOKEN`; on a non-loopback bind without
    /// one, a token is generated and printed.
    #[arg(
        long,
        env = "IANVS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Require a token even on loopback (a token is generated and printed if none is given).
    #[arg(long)]
    pub require_token: bool,
    /// Device for the hosted models (`cpu`, `cuda`, `auto`): overrides the `device`
    /// hyperparameter the edge sends, so a CPU edge can use a GPU worker.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Serve TLS with this certificate chain (PEM; the edge's `Tcp` link names the CA that
    /// signed it in `tls_ca`). Needs `--tls-key`.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Speculative-decoding sessions (one per generation, each with its KV cache) the worker
    /// keeps open at once over all connections; an edge opening one more is refused.
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS, value_name = "N")]
    pub max_sessions: usize,
    /// Exit when standard input closes (how a worker spawned by `ianvs run` never outlives it).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
    /// Fault injection for tests: the process exits abruptly (code 70) when it receives its
    /// N-th request, without answering it, as a crashed worker would.
    #[arg(long, hide = true, value_name = "N")]
    pub crash_after: Option<u64>,
}

/// A model hosted for one distinct setup.
struct Hosted {
    model: HostedModel,
    header: SetupHeader,
    ready: String,
}

enum HostedModel {
    /// The cloud model of joint inference: each request is one encoded sample.
    Classifier(Box<dyn BaseModel>),
    /// The verifier of speculative decoding: requests are the messages of
    /// `ianvs_paradigms::cloud_verifier`, each connection keeps its own sessions (KV caches).
    Verifier(Arc<dyn LanguageModel>),
}

/// One message for a connection's verifier thread, and where its responses go.
type LmJob = (
    Vec<u8>,
    tokio::sync::mpsc::UnboundedSender<std::result::Result<(Vec<u8>, u64), String>>,
);

/// Starts the thread that owns a connection's verifier sessions (they borrow the model, so
/// they live on one thread for the connection's life and are freed when it ends).
fn lm_thread(model: Arc<dyn LanguageModel>, state: Arc<State>) -> std::sync::mpsc::Sender<LmJob> {
    let (tx, rx) = std::sync::mpsc::channel::<LmJob>();
    std::thread::spawn(move || {
        let mut host = LmHost::new(model.as_ref(), &state.sessions_open, state.max_sessions);
        while let Ok((msg, reply)) = rx.recv() {
            let r = host.handle(&msg, &mut |payload, ns| {
                reply
                    .send(Ok((payload, ns)))
                    .map_err(|_| anyhow::anyhow!("the connection is gone"))
            });
            if let Err(e) = r {
                let _ = reply.send(Err(format!("{e:#}")));
            }
        }
    });
    tx
}

type Slot = Arc<tokio::sync::OnceCell<std::result::Result<Arc<Hosted>, String>>>;

struct State {
    registry: &'static Registry,
    token: Option<Vec<u8>>,
    device: Option<String>,
    crash_after: Option<u64>,
    models: Mutex<HashMap<[u8; 32], Slot>>,
    received: AtomicU64,
    served: AtomicU64,
    in_flight: AtomicU64,
    compute_ns: AtomicU64,
    connections: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
    sessions_open: std::sync::atomic::AtomicUsize,
    max_sessions: usize,
    started: Instant,
}

impl State {
    fn stats(&self) -> serde_json::Value {
        json!({
            "requests_served": self.served.load(Ordering::Relaxed),
            "queue_depth": self.in_flight.load(Ordering::Relaxed),
            "compute_s": self.compute_ns.load(Ordering::Relaxed) as f64 / 1e9,
            "connections_total": self.connections.load(Ordering::Relaxed),
            "connections_open": self.active.load(Ordering::Relaxed),
            "handshakes_refused": self.refused.load(Ordering::Relaxed),
            "sessions_open": self.sessions_open.load(Ordering::Relaxed),
            "models_hosted": self.models.lock().map(|m| m.len()).unwrap_or(0),
            "uptime_s": self.started.elapsed().as_secs_f64(),
        })
    }
}

/// Runs the worker until it is killed (or, with `--exit-on-stdin-eof`, stdin closes).
pub fn run(args: ServeArgs, registry: &'static Registry) -> Result<u8> {
    let addr: SocketAddr = args.bind.parse().with_context(|| {
        format!(
            "--bind {:?} is not an address like 127.0.0.1:7447 or 0.0.0.0:7447",
            args.bind
        )
    })?;
    let mut token = args.token.clone().filter(|t| !t.is_empty());
    let mut generated = false;
    if token.is_none() && (args.require_token || !addr.ip().is_loopback()) {
        token = Some(ianvs_paradigms::net::random_token());
        generated = true;
    }
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    let state = Arc::new(State {
        registry,
        token: token.clone().map(String::into_bytes),
        device: args.device.clone(),
        crash_after: args.crash_after,
        models: Mutex::new(HashMap::new()),
        received: AtomicU64::new(0),
        served: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        compute_ns: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        active: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        sessions_open: Default::default(),
        max_sessions: args.max_sessions,
        started: Instant::now(),
    });
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    if tls.is_none() && !addr.ip().is_loopback() {
        eprintln!("ianvs serve: warning: traffic to {addr} is not encrypted (the token and the data cross in clear); give --tls-cert/--tls-key, or tunnel it");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // The first line is read by `ianvs run` (spawn: local) and by scripts: keep its form.
        println!(
            "ianvs serve: listening on {local} (protocol v{}, token {}, {})",
            ianvs_paradigms::wire::VERSION,
            if state.token.is_some() {
                "required"
            } else {
                "not required"
            },
            if tls.is_some() { "TLS" } else { "plaintext" }
        );
        if generated {
            println!("ianvs serve: token {}", token.as_deref().unwrap_or(""));
            println!("ianvs serve: give it to edges as IANVS_TOKEN or the Tcp link's `token`");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("ianvs serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                state.connections.fetch_add(1, Ordering::Relaxed);
                state.active.fetch_add(1, Ordering::Relaxed);
                let _ = sock.set_nodelay(true);
                let served = match tls {
                    None => serve_conn(sock, &state).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(sock))
                            .await
                        {
                            Ok(Ok(s)) => serve_conn(s, &state).await,
                            Ok(Err(e)) => Err(anyhow::anyhow!("TLS handshake: {e}")),
                            Err(_) => Err(anyhow::anyhow!("no TLS handshake within 30 s")),
                        }
                    }
                };
                if let Err(e) = served {
                    if std::env::var_os("IANVS_SERVE_VERBOSE").is_some() {
                        eprintln!("ianvs serve: {peer}: {e:#}");
                    }
                }
                state.active.fetch_sub(1, Ordering::Relaxed);
            });
        }
        #[allow(unreachable_code)]
        Ok::<u8, anyhow::Error>(0)
    })
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Frame> {
    let len = s.read_u32().await?;
    if len == 0 || len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("ianvs wire: frame length {len} outside 1..={MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    Frame::decode(&body)
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, f: &Frame) -> std::io::Result<()> {
    s.write_all(&f.encode()).await?;
    s.flush().await
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    state: &Arc<State>,
) -> Result<()> {
    // A client that says nothing is dropped after 30 s.
    let hello = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut sock))
        .await
        .context("no handshake within 30 s")??;
    if let Err(reason) = check_hello(&hello, state.token.as_deref()) {
        state.refused.fetch_add(1, Ordering::Relaxed);
        write_frame(
            &mut sock,
            &Frame::Refused {
                reason: reason.clone(),
            },
        )
        .await?;
        anyhow::bail!("refused: {reason}");
    }
    write_frame(&mut sock, &Frame::Welcome).await?;
    let mut hosted: Option<Arc<Hosted>> = None;
    // The verifier thread of this connection (speculative decoding), started on first use.
    let mut lm: Option<std::sync::mpsc::Sender<LmJob>> = None;
    loop {
        let frame = match read_frame(&mut sock).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match frame {
            Frame::Setup { payload } => match host(state, payload).await {
                Ok(h) => {
                    write_frame(
                        &mut sock,
                        &Frame::Ready {
                            json: h.ready.clone(),
                        },
                    )
                    .await?;
                    hosted = Some(h);
                    lm = None;
                }
                Err(reason) => {
                    write_frame(&mut sock, &Frame::Refused { reason }).await?;
                }
            },
            Frame::Request { id, payload } => {
                let Some(h) = hosted.clone() else {
                    write_frame(
                        &mut sock,
                        &Frame::Refused {
                            reason: "a request before any setup".into(),
                        },
                    )
                    .await?;
                    anyhow::bail!("request before setup");
                };
                let n = state.received.fetch_add(1, Ordering::SeqCst) + 1;
                if state.crash_after.is_some_and(|c| n >= c) {
                    eprintln!("ianvs serve: --crash-after {n}: exiting abruptly");
                    std::process::exit(70);
                }
                if let HostedModel::Verifier(model) = &h.model {
                    let lm = lm.get_or_insert_with(|| lm_thread(model.clone(), state.clone()));
                    serve_lm(&mut sock, state, lm, id, payload).await?;
                    continue;
                }
                state.in_flight.fetch_add(1, Ordering::Relaxed);
                let out = tokio::task::spawn_blocking(move || answer(&h, &payload)).await;
                state.in_flight.fetch_sub(1, Ordering::Relaxed);
                let (bytes, ns) = match out {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => {
                        write_frame(
                            &mut sock,
                            &Frame::Refused {
                                reason: format!("{e:#}"),
                            },
                        )
                        .await?;
                        anyhow::bail!("request {id}: {e:#}");
                    }
                    Err(e) => anyhow::bail!("request {id}: the model task failed: {e}"),
                };
                state.served.fetch_add(1, Ordering::Relaxed);
                state.compute_ns.fetch_add(ns, Ordering::Relaxed);
                write_frame(
                    &mut sock,
                    &Frame::Response {
                        id,
                        compute_ns: ns,
                        payload: bytes.to_vec(),
                    },
                )
                .await?;
            }
            Frame::StatsQuery => {
                write_frame(
                    &mut sock,
                    &Frame::Stats {
                        json: state.stats().to_string(),
                    },
                )
                .await?;
            }
            other => anyhow::bail!("unexpected frame from an edge: {other:?}"),
        }
    }
}

/// Hands one speculative-decoding message to the connection's verifier thread and writes its
/// response(s) as they come (a verifier-only generation streams one per token). A message the
/// verifier cannot handle is answered `Refused` and closes the connection.
async fn serve_lm<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    state: &Arc<State>,
    lm: &std::sync::mpsc::Sender<LmJob>,
    id: u64,
    payload: Vec<u8>,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let sent = lm.send((payload, tx));
    let mut result = Ok(());
    if sent.is_err() {
        result = Err(anyhow::anyhow!("the verifier thread is gone"));
    } else {
        while let Some(out) = rx.recv().await {
            match out {
                Ok((bytes, ns)) => {
                    state.compute_ns.fetch_add(ns, Ordering::Relaxed);
                    let f = Frame::Response {
                        id,
                        compute_ns: ns,
                        payload: bytes,
                    };
                    if let Err(e) = write_frame(sock, &f).await {
                        result = Err(e.into());
                        break;
                    }
                }
                Err(reason) => {
                    let _ = write_frame(
                        sock,
                        &Frame::Refused {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                    result = Err(anyhow::anyhow!("request {id}: {reason}"));
                    break;
                }
            }
        }
    }
    state.in_flight.fetch_sub(1, Ordering::Relaxed);
    if result.is_ok() {
        state.served.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Decodes one sample, runs the model, encodes the answer; returns it with the compute time.
fn answer(h: &Hosted, payload: &[u8]) -> Result<([u8; 8], u64)> {
    let t = Instant::now();
    let HostedModel::Classifier(model) = &h.model else {
        anyhow::bail!("a classifier request to a verifier");
    };
    let x = h.header.codec.decode(payload)?;
    let probs = model.predict_proba(&x)?;
    let (class, p) = argmax(&probs);
    let out = encode_answer(class as u32, p);
    Ok((out, t.elapsed().as_nanos() as u64))
}

/// The model of a setup: built and trained on first use, shared by later connections.
async fn host(state: &Arc<State>, payload: Vec<u8>) -> std::result::Result<Arc<Hosted>, String> {
    let key: [u8; 32] = Sha256::digest(&payload).into();
    let slot = {
        let mut m = state
            .models
            .lock()
            .map_err(|_| "model table poisoned".to_string())?;
        m.entry(key).or_default().clone()
    };
    let state = state.clone();
    slot.get_or_init(|| async move {
        tokio::task::spawn_blocking(move || build(&state, &payload))
            .await
            .map_err(|e| format!("building the model failed: {e}"))
            .and_then(|r| r.map_err(|e| format!("{e:#}")))
    })
    .await
    .clone()
}

fn build(state: &State, payload: &[u8]) -> Result<Arc<Hosted>> {
    let (mut header, train) = SetupHeader::decode(payload)?;
    let has_device = state
        .registry
        .find(&header.module_type, &header.name)
        .is_some_and(|e| e.hp("device").is_some());
    if let (Some(d), true) = (&state.device, has_device) {
        {
            header
                .hyperparameters
                .0
                .insert("device".into(), serde_json::Value::String(d.clone()));
        }
    }
    let is_lm = state
        .registry
        .find(&header.module_type, &header.name)
        .is_some_and(|e| matches!(e.constructor, Constructor::LanguageModel(_)));
    if is_lm {
        let t = Instant::now();
        let lm = state
            .registry
            .build_language_model(&header.module_type, &header.name, &header.hyperparameters)
            .with_context(|| format!("{} {}", header.module_type, header.name))?;
        let ready = json!({
            "module": header.name,
            "model": lm.describe(),
            "vocab_size": lm.vocab_size(),
            "vocab_fingerprint": lm.vocab_fingerprint().to_string(),
            "eog_ids": lm.eog_ids(),
            "weight_bytes": lm.weight_bytes(),
            "setup_s": t.elapsed().as_secs_f64(),
            "device": header.hyperparameters.0.get("device").cloned().unwrap_or(json!("default")),
        })
        .to_string();
        return Ok(Arc::new(Hosted {
            model: HostedModel::Verifier(lm),
            header,
            ready,
        }));
    }
    let ctx = BuildContext {
        input_shape: header.input_shape,
        num_classes: header.num_classes,
        seed: header.seed,
    };
    let mut model = state
        .registry
        .build_model(
            &header.module_type,
            &header.name,
            &header.hyperparameters,
            &ctx,
        )
        .with_context(|| format!("{} {}", header.module_type, header.name))?;
    let t = Instant::now();
    let mut report = ianvs_paradigms::modules::TrainReport::default();
    if model.needs_training() {
        let train =
            train.context("the model needs training but the setup carried no train split")?;
        let bar = indicatif::ProgressBar::hidden();
        let cancel = AtomicBool::new(false);
        report = model.train(
            &train,
            &WorkContext {
                progress: &bar,
                cancel: &cancel,
            },
        )?;
    }
    let ready = json!({
        "module": header.name,
        "parameters": model.num_parameters(),
        "classes": model.num_classes(),
        "training_time_s": report.seconds,
        "setup_s": t.elapsed().as_secs_f64(),
        "device": header.hyperparameters.0.get("device").cloned().unwrap_or(json!("default")),
    })
    .to_string();
    Ok(Arc::new(Hosted {
        model: HostedModel::Classifier(model),
        header,
        ready,
    }))
}

/// A TLS acceptor from a PEM certificate chain and key (ring as the crypto provider).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("--tls-cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("--tls-cert / --tls-key do not make a usable certificate and key")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

//! A plug-in child process: started in its own process group, spoken to over stdin/stdout
//! ([`protocol`](super::protocol)), its stderr kept in a file, every call bounded by a timeout,
//! and killed (the whole group) on drop, on a timeout, and on Ctrl-C/SIGTERM ([`kill_all`]).

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::protocol::{read_frame_shm, write_call, Arg, Frame, Placed, Tensor, PROTOCOL_VERSION};
use super::shm::Region;

/// The Python host, built into the binary and written to a temporary folder on first use.
const HOST_SOURCE: &str = include_str!("../../../plugins/python/ianvs_host.py");

/// Process groups of the live plug-in children (for [`kill_all`]).
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Set by [`kill_all`]: no new child starts and waiting calls return at once.
static STOPPING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Where children started on this thread write their stderr (the case being run).
    static LOG_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Sets the folder that children started by this thread keep their stderr in (the controller
/// sets it to a case's log folder before running the case, and clears it after).
pub fn set_log_dir(dir: Option<PathBuf>) {
    LOG_DIR.with(|d| *d.borrow_mut() = dir);
}

fn log_dir() -> Option<PathBuf> {
    LOG_DIR.with(|d| d.borrow().clone())
}

/// Kills every live plug-in child (whole process groups) and refuses new ones: called on
/// Ctrl-C/SIGTERM and at exit, so no child outlives ianvs.
pub fn kill_all() {
    STOPPING.store(true, Ordering::SeqCst);
    if let Ok(live) = LIVE.lock() {
        for &pgid in live.iter() {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Number of plug-in children alive now (tests and `kill_all` checks).
pub fn live_children() -> Vec<i32> {
    LIVE.lock().map(|l| l.clone()).unwrap_or_default()
}

/// The interpreter for Python plug-ins and the rule that chose it (docs/plugins.md): the
/// `python` key of the module or metric, then `IANVS_PYTHON`, then an active virtual
/// environment (`$VIRTUAL_ENV/bin/python`), then `python3` on `PATH`.
pub fn choose_python(key: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(p) = key {
        return (p.to_path_buf(), "the `python` key");
    }
    if let Some(p) = std::env::var_os("IANVS_PYTHON").filter(|p| !p.is_empty()) {
        return (PathBuf::from(p), "IANVS_PYTHON");
    }
    if let Some(v) = std::env::var_os("VIRTUAL_ENV").filter(|p| !p.is_empty()) {
        return (
            Path::new(&v).join("bin/python"),
            "the active virtual environment (VIRTUAL_ENV)",
        );
    }
    (PathBuf::from("python3"), "python3 on PATH")
}

/// Finds `program` the way `Command` will (a bare name on `PATH`).
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn host_script() -> std::io::Result<PathBuf> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = PATH.get() {
        return Ok(p.clone());
    }
    // FNV-1a of the source names the folder, so two builds never share a stale host.
    let h = HOST_SOURCE.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let dir = std::env::temp_dir().join(format!("ianvs-plugin-host-{h:016x}"));
    let path = dir.join("ianvs_host.py");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(HOST_SOURCE) {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("ianvs_host.py.{}", std::process::id()));
        std::fs::write(&tmp, HOST_SOURCE)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(PATH.get_or_init(|| path).clone())
}

/// How to start one plug-in.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The plug-in file (`url:`): a `.py` file runs in the Python host, anything else is run
    /// as an executable speaking the protocol itself.
    pub file: PathBuf,
    pub python: PathBuf,
    /// The longest one call may take (the handshake gets at least 60 s: imports can be slow).
    pub timeout: Duration,
    /// For messages: e.g. `basemodel plug-in "softmax" (model.py)`.
    pub label: String,
    /// The stderr file's name inside the log folder.
    pub log_name: String,
    /// Extra environment of the child (Ianvs's `BASE_MODEL_URL`).
    pub env: Vec<(String, std::ffi::OsString)>,
}

impl Launch {
    pub fn is_python(&self) -> bool {
        self.file.extension().is_some_and(|e| e == "py")
    }
}

/// Time spent in calls: the plug-in's own compute (measured in the child around the user's
/// code) and the whole round trip seen from ianvs; the difference is protocol overhead.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub calls: u64,
    pub compute_s: f64,
    pub wall_s: f64,
}

impl CallStats {
    pub fn overhead_s(&self) -> f64 {
        (self.wall_s - self.compute_s).max(0.0)
    }
}

/// A call's answer.
#[derive(Debug)]
pub struct Reply {
    pub result: Value,
    pub tensors: Vec<Tensor>,
    pub compute_s: f64,
    pub wall_s: f64,
}

/// A failure the plug-in reported, or its process's death; `kind` is one of `load`, `import`,
/// `alias`, `params`, `raised`, `type`, `protocol`, `exited`, `timeout`, `start`, `cancelled`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PluginFailure {
    pub kind: String,
    pub message: String,
    /// The error object the plug-in sent (`missing`, `registered`, `unknown`, ...).
    pub detail: Value,
}

fn failure(kind: &str, message: String, detail: Value) -> anyhow::Error {
    PluginFailure {
        kind: kind.into(),
        message,
        detail,
    }
    .into()
}

/// A running plug-in.
pub struct PluginProcess {
    launch: Launch,
    child: Child,
    pgid: i32,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<DeadlineReader>,
    stderr_path: PathBuf,
    /// The shared region, when the child announced it maps it (`"shm": 1` in its hello).
    region: Option<Region>,
    /// The handshake: protocol version, kinds and aliases the file registers.
    pub hello: Value,
    pub stats: CallStats,
    methods: Vec<String>,
}

impl PluginProcess {
    /// Starts the plug-in and waits for its handshake. A file that fails to load (an import
    /// error, a syntax error) is a `load`/`import` failure naming the cause. Shared memory is
    /// offered unless `IANVS_PLUGIN_SHM=0`.
    pub fn spawn(launch: &Launch) -> anyhow::Result<Self> {
        Self::spawn_with(launch, shm_default())
    }

    /// [`PluginProcess::spawn`], offering the child a shared-memory region for tensors or not
    /// (it uses it only if it announces so in its hello; otherwise tensors go inline).
    pub fn spawn_with(launch: &Launch, offer_shm: bool) -> anyhow::Result<Self> {
        if STOPPING.load(Ordering::SeqCst) {
            return Err(failure(
                "cancelled",
                "cancelled: plug-ins are being stopped".into(),
                Value::Null,
            ));
        }
        static N: AtomicU64 = AtomicU64::new(0);
        let stderr_path = match log_dir() {
            Some(d) => {
                std::fs::create_dir_all(&d)?;
                d.join(&launch.log_name)
            }
            None => std::env::temp_dir().join(format!(
                "ianvs-plugin-{}-{}.stderr.log",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )),
        };
        let err_file = File::create(&stderr_path)?;
        let mut cmd = if launch.is_python() {
            let mut c = Command::new(&launch.python);
            c.arg(host_script()?).arg(&launch.file);
            // Keep the user's folders free of __pycache__ written on ianvs's behalf.
            c.env("PYTHONDONTWRITEBYTECODE", "1");
            c
        } else {
            Command::new(&launch.file)
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        // The region's descriptor is close-on-exec (no other child inherits it); this child
        // keeps it open across exec and learns its number from IANVS_SHM_FD.
        let region = offer_shm.then(Region::create).and_then(Result::ok);
        match &region {
            Some(r) => {
                let fd = r.raw_fd();
                cmd.env("IANVS_SHM_FD", fd.to_string());
                // SAFETY: only fcntl(2), async-signal-safe, runs between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            None => {
                cmd.env_remove("IANVS_SHM_FD");
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            let (prog, why) = if launch.is_python() {
                (&launch.python, "the Python interpreter")
            } else {
                (&launch.file, "the plug-in executable")
            };
            failure(
                "start",
                format!(
                    "{}: cannot start {why} {}: {e}",
                    launch.label,
                    prog.display()
                ),
                json!({"program": prog}),
            )
        })?;
        let pgid = child.id() as i32;
        if let Ok(mut l) = LIVE.lock() {
            l.push(pgid);
        }
        // A signal that arrived between the check above and the registration.
        if STOPPING.load(Ordering::SeqCst) {
            kill_group(pgid);
        }
        let stdout = child.stdout.take().expect("piped stdout");
        // Larger pipes (1 MiB, the default unprivileged maximum) move a batch of samples with
        // 16x fewer wake-ups of each side than the 64 KiB default; best effort.
        {
            use std::os::fd::AsRawFd;
            for fd in [
                stdout.as_raw_fd(),
                child.stdin.as_ref().map_or(-1, |s| s.as_raw_fd()),
            ] {
                // SAFETY: fcntl on pipe descriptors this process owns; no memory involved.
                unsafe {
                    libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
                }
            }
        }
        let stdin = BufWriter::with_capacity(1 << 16, child.stdin.take().expect("piped stdin"));
        // Read on the calling thread (no hand-off between threads per call), non-blocking
        // with poll(2) so that a call's deadline and Ctrl-C are honoured mid-frame too.
        {
            use std::os::fd::AsRawFd;
            let fd = stdout.as_raw_fd();
            // SAFETY: fcntl on a pipe descriptor this process owns; no memory involved.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        let stdout = BufReader::with_capacity(
            1 << 16,
            DeadlineReader {
                out: stdout,
                deadline: Instant::now(),
            },
        );
        let mut p = PluginProcess {
            launch: launch.clone(),
            child,
            pgid,
            stdin,
            stdout,
            stderr_path,
            region,
            hello: Value::Null,
            stats: CallStats::default(),
            methods: vec![],
        };
        let startup = launch.timeout.max(Duration::from_secs(60));
        let (hello, _) = p.receive("start-up", Instant::now(), startup)?;
        let v = hello.header["protocol"].as_u64();
        if hello.header["op"] != "hello" || v.is_none() {
            return Err(failure(
                "protocol",
                format!(
                    "{}: the first message was not a hello: {}",
                    launch.label, hello.header
                ),
                Value::Null,
            ));
        }
        if v != Some(PROTOCOL_VERSION) {
            return Err(failure(
                "protocol",
                format!(
                    "{}: speaks plug-in protocol {}, this ianvs speaks {PROTOCOL_VERSION}",
                    launch.label,
                    v.unwrap_or(0)
                ),
                Value::Null,
            ));
        }
        if hello.header["ok"] == false {
            return Err(p.reported(&hello.header["error"], "loading the file"));
        }
        if hello.header["shm"] != 1 {
            // The child does not map the region (an older or simpler plug-in): inline tensors.
            p.region = None;
        }
        p.hello = hello.header;
        Ok(p)
    }

    /// True when tensors go through shared memory with this child.
    pub fn uses_shm(&self) -> bool {
        self.region.is_some()
    }

    /// Places `t` for the life of the child (or until [`PluginProcess::clear_placed`]): in the
    /// shared region when there is one, so calls that reference it (or [`Placed::rows`] of it)
    /// send only its offset; otherwise kept here and sent inline on each call.
    pub fn place(&mut self, t: Tensor) -> anyhow::Result<Placed> {
        match &mut self.region {
            Some(r) => {
                let (off, generation) = r.place(&t.data)?;
                Ok(Placed::in_region(&t, off, generation))
            }
            None => Ok(Placed::local(t)),
        }
    }

    /// Frees every placed tensor (their handles are refused afterwards).
    pub fn clear_placed(&mut self) {
        if let Some(r) = &mut self.region {
            r.clear_placed();
        }
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn launch_label(&self) -> &str {
        &self.launch.label
    }

    /// Methods the built object has (from the constructor's answer).
    pub fn methods(&self) -> Vec<String> {
        self.methods.clone()
    }

    /// True once the child has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Aliases the file registers, by class type (`general`, `hard_example_mining`, ...).
    pub fn registered(&self) -> Value {
        self.hello["kinds"].clone()
    }

    /// Picks the alias and builds it with `params` (or, with `check_only`, only checks that
    /// the alias is registered and its constructor accepts every name in `params`).
    pub fn init(
        &mut self,
        kind: &str,
        alias: &str,
        params: &Value,
        check_only: bool,
    ) -> anyhow::Result<Value> {
        let f = Frame::new(
            json!({"op": "init", "kind": kind, "alias": alias, "params": params, "check_only": check_only}),
        );
        // The constructor is not a call: call statistics cover the module's methods only.
        let before = self.stats;
        let r = self.exchange(f, "the constructor")?.result;
        self.stats = before;
        self.methods = r["methods"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(r)
    }

    /// Calls `method` with JSON `args` and `tensors`.
    pub fn call(
        &mut self,
        method: &str,
        args: Value,
        tensors: Vec<Tensor>,
    ) -> anyhow::Result<Reply> {
        let tensors = tensors.into_iter().map(Arg::Tensor).collect();
        self.call_with(method, args, tensors)
    }

    /// [`PluginProcess::call`] with placed tensors among the arguments.
    pub fn call_with(
        &mut self,
        method: &str,
        args: Value,
        tensors: Vec<Arg<'_>>,
    ) -> anyhow::Result<Reply> {
        let header = json!({"op": "call", "method": method, "args": args});
        self.exchange_args(header, &tensors, method)
    }

    fn exchange(&mut self, f: Frame, what: &str) -> anyhow::Result<Reply> {
        let args: Vec<Arg> = f.tensors.into_iter().map(Arg::Tensor).collect();
        self.exchange_args(f.header, &args, what)
    }

    fn exchange_args(
        &mut self,
        header: Value,
        args: &[Arg<'_>],
        what: &str,
    ) -> anyhow::Result<Reply> {
        // The clock includes ianvs's own copy of tensors into the shared region.
        let t0 = Instant::now();
        let sent = write_call(&mut self.stdin, header, args, self.region.as_mut())
            .and_then(|_| self.stdin.flush());
        match sent {
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                return Err(failure(
                    "protocol",
                    format!("{}: {e}", self.launch.label),
                    Value::Null,
                ))
            }
            Err(_) => return Err(self.died(what)),
            Ok(()) => {}
        }
        let (reply, wall_s) = self.receive(what, t0, self.launch.timeout)?;
        let h = reply.header;
        if h["ok"] != true {
            return Err(self.reported(&h["error"], what));
        }
        let compute_s = h["compute_s"].as_f64().unwrap_or(0.0).clamp(0.0, wall_s);
        self.stats.calls += 1;
        self.stats.compute_s += compute_s;
        self.stats.wall_s += wall_s;
        Ok(Reply {
            result: h["result"].clone(),
            tensors: reply.tensors,
            compute_s,
            wall_s,
        })
    }

    fn receive(
        &mut self,
        what: &str,
        t0: Instant,
        timeout: Duration,
    ) -> anyhow::Result<(Frame, f64)> {
        self.stdout.get_mut().deadline = t0 + timeout;
        match read_frame_shm(&mut self.stdout, self.region.as_mut()) {
            Ok(frame) => Ok((frame, t0.elapsed().as_secs_f64())),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                kill_group(self.pgid);
                Err(failure("protocol", format!("{}: sent a malformed message during {what} ({e}); it was stopped. Its stderr: {}", self.launch.label, self.stderr_path.display()), Value::Null))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {
                kill_group(self.pgid);
                Err(failure("cancelled", "cancelled".into(), Value::Null))
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                kill_group(self.pgid);
                let _ = self.child.wait();
                Err(failure(
                    "timeout",
                    format!(
                        "{}: {what} did not answer within {} s (the per-call timeout; raise it with `timeout_s`), so it was killed. Its stderr: {}",
                        self.launch.label,
                        fmt_secs(timeout),
                        self.stderr_path.display()
                    ),
                    Value::Null,
                ))
            }
            Err(_) => Err(self.died(what)),
        }
    }

    /// The child is gone: its exit status and the end of its stderr.
    fn died(&mut self, what: &str) -> anyhow::Error {
        let t = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if t.elapsed() < Duration::from_millis(500) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break None,
            }
        };
        kill_group(self.pgid);
        if STOPPING.load(Ordering::SeqCst) {
            return failure("cancelled", "cancelled".into(), Value::Null);
        }
        let status = status.map_or("it did not exit cleanly".to_string(), |s| s.to_string());
        failure(
            "exited",
            format!(
                "{}: the plug-in process ended during {what} ({status}). The end of its stderr ({}):\n{}",
                self.launch.label,
                self.stderr_path.display(),
                indent(&tail(&self.stderr_path, 12))
            ),
            Value::Null,
        )
    }

    /// An error the plug-in reported: its message and the user's part of the traceback.
    fn reported(&self, e: &Value, what: &str) -> anyhow::Error {
        let kind = e["kind"].as_str().unwrap_or("raised");
        let msg = e["message"].as_str().unwrap_or("");
        let ty = e["type"].as_str().unwrap_or("Error");
        let tb = e["traceback"].as_str().unwrap_or("").trim_end();
        let text = match kind {
            "raised" | "load" | "import" => {
                let mut s = format!("{}: {ty} in {what}: {msg}", self.launch.label);
                if !tb.is_empty() {
                    s += &format!("\n{}", indent(tb));
                }
                s
            }
            _ => format!("{}: {msg}", self.launch.label),
        };
        failure(kind, text, e.clone())
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        kill_group(self.pgid);
        let _ = self.child.wait();
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|&p| p != self.pgid);
        }
    }
}

/// The child's stdout, non-blocking: a read waits with poll(2) until the call's deadline, in
/// slices of 100 ms so that [`kill_all`] (Ctrl-C, SIGTERM) is noticed. `TimedOut` past the
/// deadline, `ConnectionAborted` once plug-ins are being stopped.
struct DeadlineReader {
    out: std::process::ChildStdout,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            match self.out.read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => return other,
            }
            if STOPPING.load(Ordering::SeqCst) {
                // Not `Interrupted`: `read_exact` retries that.
                return Err(ErrorKind::ConnectionAborted.into());
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            let ms = left.min(Duration::from_millis(100)).as_millis().max(1) as i32;
            let mut pfd = libc::pollfd {
                fd: self.out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one valid pollfd that lives for the call.
            unsafe {
                libc::poll(&mut pfd, 1, ms);
            }
        }
    }
}

/// Shared memory is offered to children unless `IANVS_PLUGIN_SHM` is `0`, `off` or `false`.
fn shm_default() -> bool {
    !matches!(
        std::env::var("IANVS_PLUGIN_SHM").as_deref(),
        Ok("0" | "off" | "false")
    )
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) on the child's own process group; no memory involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of a file (reads at most its last 16 KiB).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 << 10)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

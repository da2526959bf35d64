//! The command line: parse arguments with clap, dispatch, map outcomes to exit codes
//! (0 success, 1 a case failed or a regression, 2 bad configuration or usage, 3 an I/O failure,
//! 4 the job folder is in use, 129/130/143 stopped by SIGHUP/SIGINT/SIGTERM).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::Paradigm;
use serde_json::json;

use crate::compare;
use crate::config::{self, Overrides};
use crate::controller::{self, RunOptions};
use crate::metrics;
use crate::report;
use crate::story::{self, JobMeta};

pub const EXIT_FAILED_CASE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
/// Reading or writing a file failed (disk full, read-only or missing folder, permissions).
pub const EXIT_IO: u8 = 3;
/// Another ianvs process holds the job folder's lock (and `--wait` was not given).
pub const EXIT_LOCKED: u8 = 4;
/// 128 + the signal number, as shells report a process killed by it.
pub const EXIT_HANGUP: u8 = 129;
pub const EXIT_INTERRUPTED: u8 = 130;
pub const EXIT_TERMINATED: u8 = 143;

static PARADIGMS: LazyLock<Vec<Box<dyn Paradigm>>> = LazyLock::new(ianvs_paradigms::paradigms);

#[derive(Parser)]
#[command(name = "ianvs", version, about = "Benchmark cloud-edge collaborative AI: single-task learning, joint inference, speculative decoding, lifelong learning", long_about = None, after_help = "Examples:\n  ianvs run -f testenvs/mnist-single-task/benchmark.yaml\n  ianvs run -f benchmark.yaml --dry-run\n  ianvs validate -f benchmark.yaml\n  ianvs list modules\n  ianvs leaderboard workspace/mnist-single-task\n  ianvs report workspace/mnist-single-task\n  ianvs compare baseline/leaderboard.json workspace/mnist-single-task --junit junit.xml")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmarking job: expand the grid, run every case, rank the results.
    Run(RunArgs),
    /// Check a benchmarking job (YAML, files, data, registry names) without running anything.
    Validate {
        /// The benchmark YAML (`benchmarkingjob: ...`).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Print the planned cases, and every path with the rule that found it, as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the paradigms, modules (with their hyperparameters) or metrics of this build.
    List {
        what: ListWhat,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-render a job's leaderboard from its stored results (`<workspace>/<job>`).
    Leaderboard {
        /// The job folder, e.g. `workspace/mnist-single-task`.
        dir: PathBuf,
        /// Print the leaderboard as JSON.
        #[arg(long)]
        json: bool,
        /// If another ianvs process is writing the job, wait for it instead of exiting 4.
        #[arg(long)]
        wait: bool,
    },
    /// Write a job's report: `report.html` (self-contained), `report.md` and `plots/`.
    Report {
        /// The job folder, e.g. `workspace/mnist-single-task`.
        dir: PathBuf,
        /// If another ianvs process is writing the job, wait for it instead of exiting 4.
        #[arg(long)]
        wait: bool,
    },
    /// Delete the stored results of cases the job no longer plans (stale: its grid, data or
    /// settings changed since they ran) and re-render the leaderboard.
    Prune {
        /// The job folder, e.g. `workspace/mnist-single-task`.
        dir: PathBuf,
        /// If another ianvs process is writing the job, wait for it instead of exiting 4.
        #[arg(long)]
        wait: bool,
    },
    /// Regression gate: compare two leaderboards case by case; exit 1 on a regression.
    #[command(
        after_help = "BASELINE and CURRENT are each a job folder or a leaderboard.json (also the JSON `ianvs run --json` prints).\nCases match by algorithm and hyperparameters. A metric regresses when it is worse than its tolerance\nand outside the 95 % confidence interval; a metric that cannot be compared (no value, text, unknown direction)\nfails too unless the tolerance file marks it `ignore: true`. Exit codes: 0 no regression, 1 regression or a check\nnot comparable, 2 bad input or no case matched (unless --allow-empty), 3 an output file could not be written."
    )]
    Compare(Box<CompareArgs>),
    /// Train a small Llama-architecture LM (and its BPE tokenizer) on a text corpus; export it
    /// as a Hugging Face folder (how the speculative-decoding draft/verifier pair is made).
    TrainLm(Box<crate::train_lm::TrainLmArgs>),
    /// Run a cloud worker for real edge-cloud links (link module `Tcp`): it hosts the cloud
    /// model of joint inference over TCP. Loopback by default; other binds need a token.
    Serve(crate::serve::ServeArgs),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(clap::Args)]
struct CompareArgs {
    /// The reference: a job folder or a leaderboard.json.
    baseline: PathBuf,
    /// The results to check: a job folder or a leaderboard.json.
    current: PathBuf,
    /// Per-metric tolerances (YAML: `default:` and `metrics: {id: {absolute|relative|direction|ignore}}`); default: 5 % relative.
    #[arg(short, long, value_name = "FILE")]
    tolerance: Option<PathBuf>,
    /// Write JUnit XML (one test case per case × metric) to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Append the Markdown summary to FILE (e.g. "$GITHUB_STEP_SUMMARY").
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Cases of the baseline missing from the current results fail the gate too.
    #[arg(long)]
    fail_on_missing: bool,
    /// Print the comparison as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Pass when no case matched (otherwise that is exit 2: the two sides are not the same job).
    #[arg(long)]
    allow_empty: bool,
}

/// Options of the configuration layer, shared by `run` and `validate`.
#[derive(clap::Args)]
struct ConfigArgs {
    /// Keys KubeEdge-Ianvs ignores (e.g. `description`) are errors instead of warnings.
    #[arg(long)]
    strict: bool,
    /// The most test cases a job may expand to (counted before anything is expanded).
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_CASES)]
    max_cases: u64,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The benchmark YAML (`benchmarkingjob: ...`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Output folder; overrides the YAML's `workspace`.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Run up to N independent cases in parallel.
    #[arg(short = 'j', long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: u32,
    /// List the test cases with their ids and hyperparameters; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Skip cases whose results are already complete in the workspace.
    #[arg(long)]
    resume: bool,
    /// No progress bars and no table; errors still go to stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Job-wide seed: the `seed` of every module that does not set one in YAML.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print the final leaderboard (or, with --dry-run, the cases) as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run every case N times (overrides the algorithms' `repeat`): metrics are the mean over
    /// runs, intervals cover every run, leaderboards gain `<metric>-std` columns.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: Option<u32>,
    /// After the run, gate it against this baseline (job folder or leaderboard.json): exit 1 on
    /// a regression; the summary and JUnit XML go to `<job>/compare/`.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Tolerances for --baseline (see `ianvs compare --help`).
    #[arg(long, value_name = "FILE", requires = "baseline")]
    tolerance: Option<PathBuf>,
    /// If another ianvs process is writing this job, wait for it instead of exiting 4.
    #[arg(long)]
    wait: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListWhat {
    Paradigms,
    Modules,
    Metrics,
}

/// The modules every command sees: the built-ins, plus a downstream crate's (set once by
/// [`main_with`]).
static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Entry point of the `ianvs` binary: the CLI with the built-in modules and metrics.
pub fn main() -> ExitCode {
    main_with(crate::Extensions::builtin())
}

/// Entry point for a downstream crate: the whole CLI with the modules and metrics of `ext`
/// (see [`crate::Extensions`]). A problem with an extension is reported before the arguments
/// are read: exit 2.
pub fn main_with(ext: crate::Extensions) -> ExitCode {
    match ext.install() {
        Ok(reg) => {
            if REGISTRY.set(reg).is_err() {
                eprintln!("error: ianvs::cli::main_with was called twice in one process");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe (`ianvs list modules | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The exit code of an error that ended a command: 4 when the job folder is locked, 3 when a
/// file could not be read or written, else 1.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<crate::workspace::Locked>()) {
        EXIT_LOCKED
    } else if e.chain().any(|c| c.is::<std::io::Error>()) {
        EXIT_IO
    } else {
        EXIT_FAILED_CASE
    }
}

/// Refuses a folder that is not a job folder as a usage error (exit 2).
fn require_job_dir(dir: &std::path::Path) -> Option<u8> {
    if dir.join("job.json").is_file() {
        return None;
    }
    eprintln!(
        "error: {} is not a job folder: it has no job.json (give `<workspace>/<job name>`)",
        dir.display()
    );
    Some(EXIT_CONFIG)
}

/// SIGINT, SIGTERM and SIGHUP all stop a run the same way: the first sets `cancel` (running
/// cases stop at their next step, finished ones are ranked), a second quits at once. Returns
/// the signal received (0 while none).
fn on_signals(cancel: Arc<AtomicBool>) -> Result<Arc<AtomicI32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let got = Arc::new(AtomicI32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    let g = got.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            // Record the signal before raising `cancel`, so the run never sees one without the other.
            if g.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                ianvs_algorithms::plugin::kill_all();
                std::process::exit(128 + sig);
            }
            cancel.store(true, Ordering::SeqCst);
            // Plug-in children live in their own process groups (the terminal's Ctrl-C does
            // not reach them): stop them now, so none outlives ianvs.
            ianvs_algorithms::plugin::kill_all();
            let name = match sig {
                SIGINT => "interrupted",
                SIGTERM => "terminated (SIGTERM)",
                _ => "hung up (SIGHUP)",
            };
            // Not eprintln!: after SIGHUP the terminal may be gone, and a failed write must not panic.
            let _ = writeln!(std::io::stderr(), "\n{name}: stopping after the current step; finished cases are kept and ranked (send it again, or press Ctrl-C, to quit now)");
        }
    });
    Ok(got)
}

fn signal_exit_code(sig: i32) -> u8 {
    match sig {
        signal_hook::consts::SIGTERM => EXIT_TERMINATED,
        signal_hook::consts::SIGHUP => EXIT_HANGUP,
        _ => EXIT_INTERRUPTED,
    }
}

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(ianvs_algorithms::registry)
}

fn out(text: &str) -> Result<()> {
    let mut so = std::io::stdout().lock();
    so.write_all(text.as_bytes())?;
    so.flush()?;
    Ok(())
}

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Validate { file, json, config } => {
            let reg = registry();
            let ov = Overrides {
                strict: config.strict,
                max_cases: Some(config.max_cases),
                ..Overrides::default()
            };
            let job = match config::load_job(&file, reg, &PARADIGMS, &ov) {
                Ok(j) => {
                    print_warnings(&j);
                    j
                }
                Err(d) => {
                    eprintln!("{d}");
                    return Ok(EXIT_CONFIG);
                }
            };
            // Checked one case at a time: validating a 100,000-case grid stays in flat memory.
            if let Err(d) = crate::preflight::check(&job, controller::plan_iter(&job), reg) {
                eprintln!("{d}");
                return Ok(EXIT_CONFIG);
            }
            let case_count = config::grid::total(&job.algorithms);
            if json {
                let cases = controller::plan(&job);
                let mut v = cases_json(&job, &cases);
                v["paths"] = serde_json::to_value(&job.paths)?;
                v["plugins"] = json!(config::plugin::describe(&job));
                v["warnings"] = job
                    .warnings
                    .iter()
                    .map(|d| json!({"file": d.file, "line": d.mark.map(|m| m.line), "key": d.path, "message": d.message}))
                    .collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let data = job.testenv.data.summary();
                out(&format!(
                    "ok: job \"{}\" is valid: {} algorithm(s), {} case(s); data: {data}\n",
                    job.name,
                    job.algorithms.len(),
                    case_count,
                ))?;
                for l in config::plugin::describe(&job) {
                    out(&format!("  {l}\n"))?;
                }
            }
            Ok(0)
        }
        Command::List { what, json } => cmd_list(what, json),
        Command::Leaderboard { dir, json, wait } => {
            if let Some(code) = require_job_dir(&dir) {
                return Ok(code);
            }
            let _lock = crate::workspace::JobLock::acquire(&dir, wait)?;
            let meta = story::read_meta(&dir)?;
            let (all, selected, stale) = story::write_rank(&dir, &meta)?;
            if let Some(note) = story::stale_note(&dir, &stale) {
                eprintln!("{note}");
            }
            if json {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&all.to_json())?
                ))?;
            } else {
                out(&selected.to_markdown())?;
                eprintln!(
                    "leaderboard files written to {}",
                    dir.join("rank").display()
                );
            }
            Ok(0)
        }
        Command::Report { dir, wait } => {
            if let Some(code) = require_job_dir(&dir) {
                return Ok(code);
            }
            let _lock = crate::workspace::JobLock::acquire(&dir, wait)?;
            let w = report::write(&dir)?;
            out(&format!(
                "report written: {} and {} ({} chart(s) in {})\n",
                w.html.display(),
                w.markdown.display(),
                w.charts,
                dir.join("plots").display()
            ))?;
            Ok(0)
        }
        Command::Prune { dir, wait } => {
            if let Some(code) = require_job_dir(&dir) {
                return Ok(code);
            }
            let _lock = crate::workspace::JobLock::acquire(&dir, wait)?;
            let meta = story::read_meta(&dir)?;
            if meta.planned.is_none() {
                eprintln!("error: {} was written by an ianvs that did not record its plan: run the job again (`ianvs run -f {}`) so ianvs knows which results are current", dir.join("job.json").display(), meta.benchmark_file);
                return Ok(EXIT_CONFIG);
            }
            let removed = story::prune(&dir, &meta)?;
            story::write_rank(&dir, &meta)?;
            out(&if removed.is_empty() {
                "no stale case results\n".to_string()
            } else {
                format!(
                    "removed {} stale case result(s): {}\n",
                    removed.len(),
                    removed.join(", ")
                )
            })?;
            Ok(0)
        }
        Command::Compare(args) => cmd_compare(*args),
        Command::TrainLm(args) => crate::train_lm::run(*args, EXIT_CONFIG, EXIT_INTERRUPTED),
        Command::Serve(args) => crate::serve::run(args, registry()),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ianvs", &mut buf);
            out(&String::from_utf8_lossy(&buf))?;
            Ok(0)
        }
    }
}

/// Keys KubeEdge-Ianvs ignores too: printed on stderr, the job still runs.
fn print_warnings(job: &config::Job) {
    if !job.warnings.is_empty() {
        eprint!("{}", job.warnings_text);
    }
}

/// `--dry-run`: one case per line (or per JSON array element), written as it is formatted, so
/// a 100,000-case listing never sits in memory as one string.
fn write_dry_run(
    job: &config::Job,
    cases: impl Iterator<Item = controller::PlannedCase>,
    as_json: bool,
) -> Result<()> {
    let mut so = std::io::BufWriter::new(std::io::stdout().lock());
    if as_json {
        write!(
            so,
            "{{\n  \"job\": {},\n  \"cases\": [",
            serde_json::to_string(&job.name)?
        )?;
        for (i, c) in cases.enumerate() {
            let v = json!({
                "case_id": c.spec.id,
                "algorithm": c.spec.algorithm,
                "paradigm": job.algorithms[c.algorithm_index].paradigm.name(),
                "grid": c.grid_values.iter().cloned().collect::<serde_json::Map<_, _>>(),
                "modules": c.spec.modules,
            });
            write!(so, "{}\n    ", if i == 0 { "" } else { "," })?;
            serde_json::to_writer(&mut so, &v)?;
        }
        writeln!(so, "\n  ]\n}}")?;
    } else {
        writeln!(
            so,
            "{} case(s) in job \"{}\" (nothing run):",
            config::grid::total(&job.algorithms),
            job.name
        )?;
        for c in cases {
            let grid: Vec<String> = c
                .grid_values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(
                so,
                "  {}  {:<24} {}",
                c.spec.id,
                c.spec.algorithm,
                grid.join(" ")
            )?;
        }
    }
    so.flush()?;
    Ok(())
}

fn cases_json(job: &config::Job, cases: &[controller::PlannedCase]) -> serde_json::Value {
    json!({
        "job": job.name,
        "cases": cases.iter().map(|c| json!({
            "case_id": c.spec.id,
            "algorithm": c.spec.algorithm,
            "paradigm": job.algorithms[c.algorithm_index].paradigm.name(),
            "grid": c.grid_values.iter().cloned().collect::<serde_json::Map<_, _>>(),
            "modules": c.spec.modules,
        })).collect::<Vec<_>>(),
    })
}

fn cmd_run(args: RunArgs) -> Result<u8> {
    let reg = registry();
    let ov = Overrides {
        workspace: args.workspace.clone(),
        seed: args.seed,
        strict: args.config.strict,
        max_cases: Some(args.config.max_cases),
    };
    let mut job = match config::load_job(&args.file, reg, &PARADIGMS, &ov) {
        Ok(j) => {
            print_warnings(&j);
            j
        }
        Err(d) => {
            eprintln!("{d}");
            return Ok(EXIT_CONFIG);
        }
    };
    if let Some(n) = args.repeat {
        for a in job.algorithms.iter_mut() {
            a.repeat = n;
        }
    }
    // A gate that cannot load its baseline must fail before hours of benchmarking, not after.
    let gate = match &args.baseline {
        Some(b) => match load_gate(b, args.tolerance.as_deref()) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("error: {e:#}");
                return Ok(EXIT_CONFIG);
            }
        },
        None => None,
    };
    if args.dry_run {
        // Planned, checked and printed one case at a time: flat memory at any grid size.
        if let Err(d) = crate::preflight::check(&job, controller::plan_iter(&job), reg) {
            eprintln!("{d}");
            return Ok(EXIT_CONFIG);
        }
        write_dry_run(&job, controller::plan_iter(&job), args.json)?;
        return Ok(0);
    }
    let (cases, warnings) = controller::plan_with_warnings(&job);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Err(d) = crate::preflight::check(&job, &cases, reg) {
        eprintln!("{d}");
        return Ok(EXIT_CONFIG);
    }

    let job_dir = controller::job_dir(&job);
    // One writer per job folder: a second run (or a render) refuses, naming this one.
    let _lock = crate::workspace::JobLock::acquire(&job_dir, args.wait)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let signal = on_signals(cancel.clone())?;
    let mut meta = JobMeta::of(&job);
    meta.planned = Some(cases.iter().map(|c| c.spec.id.clone()).collect());
    story::write_meta(&job_dir, &meta)?;
    report::RunInfo::of(&job, args.jobs as usize).write(&job_dir)?;
    if !args.quiet {
        eprintln!(
            "running job \"{}\": {} case(s), {} at a time; results in {}",
            job.name,
            cases.len(),
            args.jobs,
            job_dir.display()
        );
    }
    let summary = controller::run(
        &job,
        &cases,
        reg,
        &RunOptions {
            jobs: args.jobs as usize,
            resume: args.resume,
            quiet: args.quiet,
        },
        &cancel,
    );
    // Every case is scored: the plug-in metrics' processes end here, and no plug-in child may
    // outlive the run.
    crate::metrics::plugin::stop_all();
    ianvs_algorithms::plugin::kill_all();
    let summary = summary?;
    let (all, selected, stale) =
        story::write_rank(&job_dir, &meta).context("writing the leaderboard")?;
    if job.rank.save_mode == "selected_and_all_and_picture" {
        // Ianvs draws pictures in this mode; ianvs's pictures are the report and its charts.
        let w = report::write(&job_dir).context("drawing the pictures (save_mode)")?;
        if !args.quiet {
            eprintln!(
                "pictures: {} chart(s) in {}",
                w.charts,
                job_dir.join("plots").display()
            );
        }
    }
    if args.json {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&all.to_json())?
        ))?;
    } else if !args.quiet && job.rank.visualization_mode != "none" {
        let table = if job.rank.visualization_mode == "all" {
            &all
        } else {
            &selected
        };
        out(&table.to_markdown())?;
    }
    if !args.quiet {
        eprintln!(
            "{} case(s) run, {} failed, {} skipped as complete; leaderboard in {}",
            summary.ran,
            summary.failed,
            summary.skipped,
            job_dir.join("rank").display()
        );
    }
    if let Some(note) = story::stale_note(&job_dir, &stale) {
        eprintln!("{note}");
    }
    // The results are safe on disk already, but a report asked for and not written is an
    // error (exit 3 on I/O), not a warning a CI job would miss.
    let mut report_failed = None;
    match report::write(&job_dir) {
        Ok(w) if !args.quiet => eprintln!("report: {} ({} chart(s))", w.html.display(), w.charts),
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: could not write the report: {e:#}");
            report_failed = Some(exit_code_of(&e));
        }
    }
    let mut regressed = false;
    if let Some((baseline, tolerances)) = gate {
        let current = compare::Board::load(&job_dir)?;
        let cmp = compare::compare(baseline, current, tolerances, false)?;
        if cmp.matched() == 0 {
            eprintln!(
                "error: no case of {} matched a case of the baseline {} (by algorithm and hyperparameters): nothing was compared",
                job_dir.display(),
                cmp.baseline.source
            );
            return Ok(EXIT_CONFIG);
        }
        let dir = job_dir.join("compare");
        let summary_file = dir.join("summary.md");
        compare::write_outputs(&cmp, None, Some(&dir.join("junit.xml")))?;
        let md = compare::to_markdown(&cmp);
        // The job's own summary is replaced whole (`--summary` of `ianvs compare` appends).
        crate::workspace::atomic_write(&summary_file, md.as_bytes())?;
        if args.json || args.quiet {
            eprint!("{}", if args.quiet { String::new() } else { md });
        } else {
            out(&format!("\n{md}"))?;
        }
        if cmp.failed() {
            eprintln!(
                "regression gate failed: {} regression(s), {} check(s) not comparable against {}; details in {}",
                cmp.regressions(),
                cmp.not_comparable(),
                cmp.baseline.source,
                summary_file.display()
            );
            regressed = true;
        }
    }
    Ok(if summary.cancelled {
        signal_exit_code(signal.load(Ordering::SeqCst))
    } else if let Some(code) = report_failed {
        code
    } else if summary.failed > 0 || regressed {
        EXIT_FAILED_CASE
    } else {
        0
    })
}

fn load_gate(
    baseline: &std::path::Path,
    tolerance: Option<&std::path::Path>,
) -> Result<(compare::Board, compare::Tolerances)> {
    let b = compare::Board::load(baseline).context("loading the baseline")?;
    let t = match tolerance {
        Some(f) => compare::Tolerances::load(f)?,
        None => compare::Tolerances::default(),
    };
    Ok((b, t))
}

fn cmd_compare(args: CompareArgs) -> Result<u8> {
    // Bad input is exit 2, so a CI job can tell "the gate could not run" from "it found a regression".
    let loaded = load_gate(&args.baseline, args.tolerance.as_deref()).and_then(|(b, t)| {
        Ok((
            b,
            compare::Board::load(&args.current).context("loading the current results")?,
            t,
        ))
    });
    let (baseline, current, tolerances) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_CONFIG);
        }
    };
    let cmp = match compare::compare(baseline, current, tolerances, args.fail_on_missing) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(EXIT_CONFIG);
        }
    };
    if cmp.matched() == 0 && !args.allow_empty {
        eprintln!(
            "error: no case matched between {} ({} case(s)) and {} ({} case(s)): nothing was compared; are both the same job? (--allow-empty passes anyway)",
            args.baseline.display(),
            cmp.baseline.cases.len(),
            args.current.display(),
            cmp.current.cases.len()
        );
        return Ok(EXIT_CONFIG);
    }
    compare::write_outputs(&cmp, args.summary.as_deref(), args.junit.as_deref())?;
    if args.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&cmp)?))?;
    } else {
        out(&compare::to_markdown(&cmp))?;
    }
    Ok(if cmp.failed() { EXIT_FAILED_CASE } else { 0 })
}

fn cmd_list(what: ListWhat, as_json: bool) -> Result<u8> {
    let reg = registry();
    let bold = |s: &str| {
        if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            console::style(s).bold().to_string()
        } else {
            s.to_string()
        }
    };
    match what {
        ListWhat::Paradigms => {
            if as_json {
                let v: Vec<_> = PARADIGMS.iter().map(|p| json!({"name": p.name(), "summary": p.summary(), "modules": p.slots().iter().map(|s| json!({"type": s.module_type, "required": s.required, "help": s.help})).collect::<Vec<_>>(), "settings": p.settings().iter().map(|h| json!({"name": h.name, "kind": h.kind.to_string(), "default": h.default, "help": h.help})).collect::<Vec<_>>(), "metrics": metrics::ids_for(p.record_kind())})).collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut s = String::new();
                for p in PARADIGMS.iter() {
                    s.push_str(&format!("{}  {}\n", bold(p.name()), p.summary()));
                    for slot in p.slots() {
                        s.push_str(&format!(
                            "    module {:<22} {}{}\n",
                            slot.module_type,
                            if slot.required { "" } else { "(optional) " },
                            slot.help
                        ));
                    }
                    for h in p.settings() {
                        s.push_str(&format!(
                            "    testenv.{:<20} {} (default {}) {}\n",
                            h.name,
                            h.kind,
                            h.default
                                .as_ref()
                                .map_or("required".into(), |d| d.to_string()),
                            h.help
                        ));
                    }
                    s.push_str(&format!(
                        "    metrics: {}\n",
                        metrics::ids_for(p.record_kind()).join(", ")
                    ));
                }
                out(&s)?;
            }
        }
        ListWhat::Modules => {
            if as_json {
                let v: Vec<_> = reg.entries().iter().map(|e| json!({"type": e.module_type, "name": e.name, "summary": e.summary, "hyperparameters": e.hyperparameters.iter().map(|h| json!({"name": h.name, "kind": h.kind.to_string(), "default": h.default, "help": h.help})).collect::<Vec<_>>()})).collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut s = String::new();
                for e in reg.entries() {
                    s.push_str(&format!(
                        "{} {}  {}\n",
                        e.module_type,
                        bold(e.name),
                        e.summary
                    ));
                    for h in &e.hyperparameters {
                        s.push_str(&format!(
                            "    {:<18} {:<36} default {:<10} {}\n",
                            h.name,
                            h.kind.to_string(),
                            h.default
                                .as_ref()
                                .map_or("(required)".into(), |d| d.to_string()),
                            h.help
                        ));
                    }
                }
                out(&s)?;
            }
        }
        ListWhat::Metrics => {
            if as_json {
                let v: Vec<_> = metrics::all().map(|m| json!({"id": m.id, "aliases": m.aliases, "unit": m.unit, "higher_is_better": m.higher_is_better, "records": m.kinds, "help": m.help})).collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut s = String::new();
                for m in metrics::all() {
                    s.push_str(&format!(
                        "{:<16} {:<10} {:<6} {}  (aliases: {})\n",
                        bold(m.id),
                        if m.unit.is_empty() { "-" } else { m.unit },
                        if m.higher_is_better {
                            "higher"
                        } else {
                            "lower"
                        },
                        m.help,
                        m.aliases.join(", ")
                    ));
                }
                out(&s)?;
            }
        }
    }
    Ok(0)
}

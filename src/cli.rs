//! The command line: parse arguments with clap, dispatch, map outcomes to exit codes
//! (0 success, 1 a case failed, 2 bad configuration or usage, 130 interrupted).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

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
pub const EXIT_INTERRUPTED: u8 = 130;

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
    /// List the built-in paradigms, modules (with their hyperparameters) or metrics.
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
    },
    /// Write a job's report: `report.html` (self-contained), `report.md` and `plots/`.
    Report {
        /// The job folder, e.g. `workspace/mnist-single-task`.
        dir: PathBuf,
    },
    /// Regression gate: compare two leaderboards case by case; exit 1 on a regression.
    #[command(
        after_help = "BASELINE and CURRENT are each a job folder or a leaderboard.json (also the JSON `ianvs run --json` prints).\nCases match by algorithm and hyperparameters. A metric regresses when it is worse than its tolerance\nand outside the 95 % confidence interval. Exit codes: 0 no regression, 1 regression, 2 bad input."
    )]
    Compare(Box<CompareArgs>),
    /// Train a small Llama-architecture LM (and its BPE tokenizer) on a text corpus; export it
    /// as a Hugging Face folder (how the speculative-decoding draft/verifier pair is made).
    TrainLm(Box<crate::train_lm::TrainLmArgs>),
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
}

#[derive(Clone, Copy, ValueEnum)]
enum ListWhat {
    Paradigms,
    Modules,
    Metrics,
}

/// Entry point: runs the CLI and turns the outcome into an exit code.
pub fn main() -> ExitCode {
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
            ExitCode::from(EXIT_FAILED_CASE)
        }
    }
}

fn registry() -> Registry {
    ianvs_algorithms::registry()
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
            let job = match config::load_job(&file, &reg, &PARADIGMS, &ov) {
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
            if let Err(d) = crate::preflight::check(&job, controller::plan_iter(&job), &reg) {
                eprintln!("{d}");
                return Ok(EXIT_CONFIG);
            }
            let case_count = config::grid::total(&job.algorithms);
            if json {
                let cases = controller::plan(&job);
                let mut v = cases_json(&job, &cases);
                v["paths"] = serde_json::to_value(&job.paths)?;
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
            }
            Ok(0)
        }
        Command::List { what, json } => cmd_list(what, json),
        Command::Leaderboard { dir, json } => {
            let meta = story::read_meta(&dir)?;
            let (all, selected) = story::write_rank(&dir, &meta)?;
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
        Command::Report { dir } => {
            if !dir.join("job.json").is_file() {
                eprintln!("error: {} is not a job folder: it has no job.json (give `<workspace>/<job name>`)", dir.display());
                return Ok(EXIT_CONFIG);
            }
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
        Command::Compare(args) => cmd_compare(*args),
        Command::TrainLm(args) => crate::train_lm::run(*args, EXIT_CONFIG, EXIT_INTERRUPTED),
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
    let mut job = match config::load_job(&args.file, &reg, &PARADIGMS, &ov) {
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
        if let Err(d) = crate::preflight::check(&job, controller::plan_iter(&job), &reg) {
            eprintln!("{d}");
            return Ok(EXIT_CONFIG);
        }
        write_dry_run(&job, controller::plan_iter(&job), args.json)?;
        return Ok(0);
    }
    let cases = controller::plan(&job);
    if let Err(d) = crate::preflight::check(&job, &cases, &reg) {
        eprintln!("{d}");
        return Ok(EXIT_CONFIG);
    }

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // First Ctrl-C: finish writing what is done and stop; second: leave at once.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(EXIT_INTERRUPTED as i32);
            }
            eprintln!("\ninterrupted: stopping after the current step; finished cases are kept (press Ctrl-C again to quit now)");
        });
    }
    let job_dir = controller::job_dir(&job);
    let meta = JobMeta::of(&job);
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
        &reg,
        &RunOptions {
            jobs: args.jobs as usize,
            resume: args.resume,
            quiet: args.quiet,
        },
        &cancel,
    )?;
    let (all, selected) = story::write_rank(&job_dir, &meta).context("writing the leaderboard")?;
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
    // The report is a view of results already safe on disk: failing to draw it is a warning.
    match report::write(&job_dir) {
        Ok(w) if !args.quiet => eprintln!("report: {} ({} chart(s))", w.html.display(), w.charts),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not write the report: {e:#}"),
    }
    let mut regressed = false;
    if let Some((baseline, tolerances)) = gate {
        let current = compare::Board::load(&job_dir)?;
        let cmp = compare::compare(baseline, current, tolerances, false)?;
        let dir = job_dir.join("compare");
        let summary_file = dir.join("summary.md");
        let _ = std::fs::remove_file(&summary_file);
        compare::write_outputs(&cmp, Some(&summary_file), Some(&dir.join("junit.xml")))?;
        let md = compare::to_markdown(&cmp);
        if args.json || args.quiet {
            eprint!("{}", if args.quiet { String::new() } else { md });
        } else {
            out(&format!("\n{md}"))?;
        }
        if cmp.failed() {
            eprintln!(
                "regression gate failed: {} regression(s) against {}; details in {}",
                cmp.regressions(),
                cmp.baseline.source,
                summary_file.display()
            );
            regressed = true;
        }
    }
    Ok(if summary.cancelled {
        EXIT_INTERRUPTED
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

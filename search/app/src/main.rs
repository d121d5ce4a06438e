//! `genas`: the command line. Parses arguments, calls the `genas_app` commands, prints. Every
//! error is one line on stderr with a non-zero exit status.

mod args;

use args::*;
use clap::Parser;
use genas_app::inspect::{self, InspectOptions};
use genas_app::train;
use genas_app::{calibration, teacher};
use genas_space::Tokenizer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// What the ranges cannot say: flags that only make sense together.
fn check_args(command: &Command) -> anyhow::Result<()> {
    if let Command::Bench(BenchCommand::Table(a)) = command {
        if a.final_fidelities == 0 && !a.sample_only {
            anyhow::bail!("--final-fidelities 0 needs --sample-only: a whole table without finals has no final quality to rank against");
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<String> {
    check_args(&cli.command)?;
    match cli.command {
        Command::Worker(a) => {
            let out = genas_exec::slurm::work(&a.task).map_err(anyhow::Error::msg)?;
            Ok(format!("result written to {}\n", out.display()))
        }
        Command::Space(SpaceCommand::Check {
            file,
            json: as_json,
        }) => {
            let check = inspect::space_check(&file)?;
            if as_json {
                json(&check)
            } else {
                Ok(inspect::render_space_check(&check))
            }
        }
        Command::Space(SpaceCommand::Sample(a)) => {
            let samples = inspect::space_sample(&a.file, a.n, a.seed, a.unconstrained)?;
            if a.json {
                json(&samples)
            } else {
                Ok(inspect::render_samples(&samples))
            }
        }
        Command::Data(DataCommand::Inspect(a)) => {
            let opts = InspectOptions {
                seq_len: a.seq_len,
                tokenizer: match a.tokenizer {
                    TokenizerArg::Char => Tokenizer::Char,
                    TokenizerArg::Byte => Tokenizer::Byte,
                },
                image_size: a.image_size,
                gray_levels: a.gray_levels,
                validation_fraction: a.validation_fraction,
            };
            let summary = inspect::data_inspect(&a.file, &opts)?;
            if a.json {
                json(&summary)
            } else {
                Ok(inspect::render_data(&summary))
            }
        }
        Command::Train(a) => {
            let opts = train::TrainOptions {
                steps: a.steps,
                seed: a.seed,
                batch_size: a.batch_size,
                learning_rate: a.lr,
                threads: a.threads,
                out: a.out,
            };
            let quiet = a.json;
            let summary = train::train_architecture(&a.arch, &a.experiment, &opts, |s, total| {
                let every = (total / 10).max(1);
                if !quiet && (s.step + 1) % every == 0 {
                    eprintln!(
                        "step {:>6}/{total}  loss {:.4}  lr {:.2e}  |g| {:.3}",
                        s.step + 1,
                        s.loss,
                        s.lr,
                        s.grad_norm
                    );
                }
            })?;
            if a.json {
                json(&summary)
            } else {
                Ok(train::render_train(&summary))
            }
        }
        Command::Bench(BenchCommand::Train(a)) => {
            if a.d_model == 0
                || a.heads == 0
                || a.d_model % a.heads != 0
                || a.layers == 0
                || a.seq < 2
                || a.batch == 0
                || a.steps == 0
                || a.vocab < 2
            {
                anyhow::bail!("bench train needs positive sizes, heads dividing d_model, seq ≥ 2 and vocab ≥ 2");
            }
            let cfg = genas_engine::bench::BenchConfig {
                vocab: a.vocab,
                d_model: a.d_model,
                layers: a.layers,
                heads: a.heads,
                seq: a.seq,
                batch: a.batch,
                steps: a.steps,
                warmup: a.warmup,
                threads: a.threads,
                gemm_profile: a.gemm_profile,
                llama: a.llama,
            };
            let report = genas_engine::bench::bench_train(&cfg).map_err(anyhow::Error::msg)?;
            if a.json {
                Ok(serde_json::to_string(&report)? + "\n")
            } else {
                Ok(train::render_bench(&report))
            }
        }
        Command::Bench(BenchCommand::Runner(a)) => {
            let mut n = genas_app::gpu_check::write_fixtures(&a.repo, &a.out, a.candidates)?;
            if a.real {
                n += genas_app::gpu_check::write_real_fixtures(&a.out)?;
            }
            Ok(format!(
                "{n} runner jobs with the engine's results written to {}\n",
                a.out.display()
            ))
        }
        Command::Bench(BenchCommand::Distill(a)) => {
            let cfg = genas_scoring::distill_bench::DistillBenchConfig {
                vocab: a.vocab,
                top_k: a.top_k,
                teacher_d_model: a.teacher_d_model,
                teacher_layers: a.teacher_layers,
                d_model: a.d_model,
                layers: a.layers,
                seq: a.seq,
                batch: a.batch,
                steps: a.steps,
                threads: a.threads,
            };
            let report =
                genas_scoring::distill_bench::bench_distill(&cfg).map_err(anyhow::Error::msg)?;
            if a.json {
                Ok(serde_json::to_string(&report)? + "\n")
            } else {
                Ok(train::render_bench_distill(&report))
            }
        }
        Command::Bench(BenchCommand::Fuzz(a)) => {
            use genas_app::fuzz::{self, Target};
            let targets: Vec<Target> = if a.target.is_empty() {
                Target::ALL.to_vec()
            } else {
                a.target
                    .iter()
                    .map(|t| match t {
                        FuzzTargetArg::Experiment => Target::Experiment,
                        FuzzTargetArg::Architecture => Target::Architecture,
                        FuzzTargetArg::Idx => Target::Idx,
                        FuzzTargetArg::Text => Target::Text,
                        FuzzTargetArg::Config => Target::CheckpointConfig,
                        FuzzTargetArg::ShardIndex => Target::ShardIndex,
                        FuzzTargetArg::Safetensors => Target::SafetensorsHeader,
                        FuzzTargetArg::Tokenizer => Target::Tokenizer,
                        FuzzTargetArg::Table => Target::Table,
                        FuzzTargetArg::WorkerTask => Target::WorkerTask,
                        FuzzTargetArg::Jsonl => Target::JsonLines,
                        FuzzTargetArg::Parquet => Target::Parquet,
                    })
                    .collect()
            };
            let report = fuzz::fuzz(&targets, a.inputs, a.seed, a.threads);
            let text = if a.json {
                json(&report)?
            } else {
                fuzz::render(&report)
            };
            if report.failures > 0 {
                print!("{text}");
                anyhow::bail!(
                    "{} of {} fuzz inputs failed (listed above)",
                    report.failures,
                    report.inputs
                );
            }
            Ok(text)
        }
        Command::Bench(BenchCommand::Search(a)) => {
            use genas_app::simulate;
            let table = genas_exec::replay::Table::read(&a.table)?;
            if a.surrogate {
                use genas_app::surrogate_bench as sb;
                let opts = sb::SurrogateOptions {
                    seeds: a.seeds,
                    budgets: a.budgets.clone(),
                    min_tau: a.min_tau,
                    pool: a.pool,
                };
                let b = with_progress(a.json, |say, progress| {
                    sb::bench_search_surrogate(&a.file, &table, &opts, say, &|d, n| {
                        progress("simulated runs", d, n)
                    })
                })?;
                return if a.json { json(&b) } else { Ok(sb::render(&b)) };
            }
            let exp = genas_space::Experiment::from_path(&a.file)?;
            let configs = simulate::default_configs(&exp, &table.rung_steps);
            let configs = match a.candidates {
                Some(n) => simulate::with_candidates(configs, n),
                None => configs,
            };
            let b = with_progress(a.json, |_, progress| {
                simulate::bench_search(&exp, &table, &configs, a.seeds, &|d, n| {
                    progress("simulated runs", d, n)
                })
            })?;
            if let Some(p) = &a.plot {
                if b.sample_only {
                    anyhow::bail!(
                        "{}: a table of its final sample only has no searches to plot",
                        a.table.display()
                    );
                }
                genas_app::plot::write(genas_app::plot::anytime::plot_svg(&b), p)?;
            }
            if a.json {
                json(&b)
            } else {
                Ok(simulate::render(&b))
            }
        }
        Command::Bench(BenchCommand::Baselines(a)) => {
            let stem = a
                .file
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().to_string());
            let opts = genas_app::report::baselines::BenchOptions {
                archive: a.archive,
                out: a
                    .out
                    .unwrap_or_else(|| PathBuf::from(format!("baselines-{stem}"))),
                seeds: a.seeds,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::report::baselines::bench(&a.file, &opts, &STOP, say, progress)
            })?;
            if a.json {
                json(&r)
            } else {
                Ok(genas_app::report::render::baselines_markdown(&r)
                    + &format!("report written to {}\n", opts.out.display()))
            }
        }
        Command::Bench(BenchCommand::Blockwise(a)) => {
            let opts = genas_app::blockwise::bench::BenchOptions {
                archive: a.archive,
                sample: a.sample as usize,
                final_steps: a.final_steps,
                seed: a.seed,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::blockwise::bench::bench(&a.run, &opts, &STOP, say, progress)
            })?;
            if a.json {
                json(&r)
            } else {
                Ok(genas_app::blockwise::bench::render(&r))
            }
        }
        Command::Bench(BenchCommand::Table(a)) => {
            let opts = genas_app::tabulate::TableOptions {
                out: a.out.clone(),
                archive: a.archive.clone(),
                final_sample: a.final_sample,
                sample_only: a.sample_only,
                final_fidelities: a.final_fidelities,
                threads: a.threads,
                seed: a.seed,
                sample: a.sample.unwrap_or(0),
            };
            let t = with_progress(a.json, |say, progress| {
                genas_app::tabulate::make_table(&a.file, &opts, say, progress)
            })?;
            if a.json {
                json(&serde_json::json!({
                    "out": a.out,
                    "rows": t.rows.len(),
                    "provenance": t.provenance,
                }))
            } else {
                Ok(genas_app::tabulate::render(&t) + &format!("written to {}\n", a.out.display()))
            }
        }
        Command::Search(a) => {
            let opts = genas_app::search::SearchOptions {
                archive: a.archive.clone(),
                seed: a.seed,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::search::search(&a.file, &opts, &STOP, say, progress)
            });
            finish_search(r, &a.archive, a.plot, a.json)
        }
        Command::Resume(a) => {
            let opts = genas_app::search::SearchOptions {
                archive: a.archive.clone(),
                seed: None,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::search::resume(&a.run, &opts, &STOP, say, progress)
            });
            finish_search(r, &a.archive, a.plot, a.json)
        }
        Command::Runs(a) => {
            let lines = genas_app::runs::runs(&a.archive)?;
            if a.json {
                json(&lines)
            } else {
                Ok(genas_app::runs::render_runs(&lines))
            }
        }
        Command::Show(a) => {
            let s = genas_app::runs::show(&a.archive, &a.run)?;
            if a.json {
                json(&s)
            } else {
                Ok(genas_app::runs::render_show(&s))
            }
        }
        Command::Front(a) => {
            let r = genas_app::search::front(&a.archive, &a.run, a.plot.as_deref())?;
            if a.json {
                json(&r)
            } else {
                let mut out = genas_app::runs::render_report(&r);
                if let Some(p) = &a.plot {
                    out += &format!("\nplot written to {}\n", p.display());
                }
                Ok(out)
            }
        }
        Command::Distill(a) => {
            let opts = genas_app::winners::distill::DistillOptions {
                archive: a.archive,
                steps: a.steps,
                threads: a.threads,
            };
            let names = a.candidate.map(|c| vec![c]);
            let recs = with_progress(a.json, |say, progress| {
                genas_app::winners::distill::distill(
                    &opts,
                    &a.run,
                    names.as_deref(),
                    &STOP,
                    say,
                    progress,
                )
            })?;
            if a.json {
                json(&recs)
            } else {
                Ok(genas_app::winners::distill::render_distilled(&recs))
            }
        }
        Command::Export(a) => {
            let format = match a.format {
                FormatArg::Json => genas_interop::export::Format::Json,
                FormatArg::Hf => genas_interop::export::Format::Hf,
                FormatArg::Pytorch => genas_interop::export::Format::Pytorch,
            };
            let export = if a.with_training {
                genas_app::winners::export::export_with_training
            } else {
                genas_app::winners::export::export_candidate
            };
            let w = export(
                &a.archive,
                &a.run,
                &a.candidate,
                format,
                &a.out,
                a.weights.into(),
                a.densify,
            )?;
            if a.json {
                json(&w)
            } else {
                Ok(genas_app::winners::export::render_export(&w))
            }
        }
        Command::Sample(a) => {
            let opts = genas_app::winners::sample::SampleOptions {
                n: a.n,
                length: a.length,
                temperature: a.temperature,
                top_k: a.top_k,
                prompt: a.prompt,
                seed: a.seed,
                weights: a.weights.into(),
                out: a.out,
            };
            let s = genas_app::winners::sample::sample(&a.archive, &a.run, &a.candidate, &opts)?;
            if a.json {
                json(&s)
            } else {
                Ok(genas_app::winners::sample::render_samples(&s))
            }
        }
        Command::Report(a) => {
            let opts = genas_app::report::ReportOptions {
                out: a
                    .out
                    .unwrap_or_else(|| genas_app::report::default_out(&a.run)),
                archive: a.archive,
                ablate_kd: a.ablate_kd,
                baselines: a.baselines,
                baseline_seeds: a.baseline_seeds,
                threads: a.threads,
            };
            let r = with_progress(a.json, |say, progress| {
                genas_app::report::report(&opts, &a.run, &STOP, say, progress)
            })?;
            if a.json {
                json(&r)
            } else {
                Ok(genas_app::report::render_summary(&r))
            }
        }
        Command::Teacher(TeacherCommand::Export { file, archive, out }) => {
            teacher::teacher_export(&file, &archive, &out)
        }
        Command::Teacher(TeacherCommand::Import {
            dir,
            experiment,
            out,
            json: as_json,
        }) => {
            let r =
                teacher::teacher_import(&dir, experiment.as_deref(), out.as_deref(), &mut |m| {
                    if !as_json {
                        eprintln!("{m}")
                    }
                })?;
            if as_json {
                json(&r)
            } else {
                Ok(teacher::render_import(&r))
            }
        }
        Command::Teacher(TeacherCommand::Train {
            file,
            archive,
            retrain,
            json: as_json,
        }) => {
            let t = teacher::teacher_train(
                &file,
                &archive,
                retrain,
                &mut |m| eprintln!("{m}"),
                &mut teacher_progress(as_json),
            )?;
            if as_json {
                json(&t)
            } else {
                Ok(teacher::render_teacher(&t))
            }
        }
        Command::Proxies(ProxiesCommand::Calibrate(CalibrateArgs {
            file,
            table: Some(path),
            against,
            n,
            json: as_json,
            ..
        })) => {
            genas_space::Experiment::from_path(&file)?;
            let table = genas_exec::replay::Table::read(&path)?;
            let limit = n.unwrap_or(usize::MAX);
            let r = genas_app::simulate::calibrate_from_table(&table, against, limit)?;
            if as_json {
                json(&r)
            } else {
                Ok(genas_app::simulate::render_table_calibration(&r, &path))
            }
        }
        Command::Proxies(ProxiesCommand::Calibrate(a)) => {
            let opts = calibration::CalibrateOptions {
                n: a.n.unwrap_or(CALIBRATE_N),
                steps: a.steps,
                archive: a.archive,
                out: a.out,
                threads: a.threads,
                repeats: a.repeats,
            };
            let quiet = a.json;
            let r = calibration::proxies_calibrate(
                &a.file,
                &opts,
                &mut |m| eprintln!("{m}"),
                &mut teacher_progress(quiet),
                &|done, total, row| {
                    if !quiet {
                        let q = row.distill.eval.map_or("diverged".to_string(), |e| {
                            format!("val CE {:.3}", e.val_ce)
                        });
                        eprintln!("[{done:>3}/{total}] {} {}: {q}", row.id, row.architecture);
                    }
                },
            )?;
            if a.json {
                json(&r)
            } else {
                Ok(calibration::render_calibration(&r))
            }
        }
    }
}

/// Teacher training progress on stderr, every tenth of the run.
fn teacher_progress(quiet: bool) -> impl FnMut(u32, f64) {
    move |step, loss| {
        if !quiet && (step + 1) % 50 == 0 {
            eprintln!("teacher step {:>6}  loss {loss:.4}", step + 1);
        }
    }
}

/// Set by Ctrl-C: the search finishes the commit in progress and stops.
static STOP: AtomicBool = AtomicBool::new(false);

/// A progress bar on stderr (hidden when stderr is not a terminal or output is JSON).
fn progress_bar() -> ProgressBar {
    // Hidden until the first report, so no empty bar stands on the screen meanwhile.
    let pb = ProgressBar::hidden();
    pb.set_style(
        ProgressStyle::with_template("{msg:<32} [{bar:30}] {pos}/{len} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Runs `f` with a message sink and a progress callback drawing one bar on stderr.
fn with_progress<R>(
    quiet: bool,
    f: impl FnOnce(&mut dyn FnMut(&str), &(dyn Fn(&str, usize, usize) + Sync)) -> R,
) -> R {
    let pb = progress_bar();
    let shown = AtomicBool::new(quiet);
    let r = f(
        &mut |m| {
            if !quiet {
                pb.suspend(|| eprintln!("{m}"))
            }
        },
        &|label, done, total| {
            if !shown.swap(true, Ordering::Relaxed) {
                pb.set_draw_target(ProgressDrawTarget::stderr());
            }
            pb.set_message(label.to_string());
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    );
    pb.finish_and_clear();
    r
}

fn finish_search(
    r: anyhow::Result<genas_app::runs::SearchReport>,
    archive: &std::path::Path,
    plot: Option<PathBuf>,
    as_json: bool,
) -> anyhow::Result<String> {
    let r = r?;
    let plot = plot.unwrap_or_else(|| PathBuf::from(format!("front-{}.svg", r.run)));
    genas_app::search::front(archive, &r.run, Some(&plot))?;
    if STOP.load(Ordering::SeqCst) && r.status != "finished" {
        eprintln!(
            "interrupted after the last commit; continue with: genas resume {} --archive {}",
            r.run,
            archive.display()
        );
    }
    if as_json {
        json(&r)
    } else {
        Ok(genas_app::runs::render_report(&r) + &format!("\nplot written to {}\n", plot.display()))
    }
}

fn main() -> ExitCode {
    genas_engine::memory::map_large_allocations();
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{place}: {} (please report this)",
            msg.replace('\n', " ")
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A flag out of its range, a missing argument, an unknown flag: one line, as every
            // other error, with the flag and what it accepts.
            let text = e.render().to_string();
            let line: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{}", line.join(" "));
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C: finish the commit in progress, then stop; a second Ctrl-C ends at once.
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after the commit in progress (Ctrl-C again to quit now)");
    });
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            if STOP.load(Ordering::SeqCst) {
                // Interrupted by Ctrl-C after a clean commit.
                return ExitCode::from(130);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            if STOP.load(Ordering::SeqCst) {
                // Interrupted by Ctrl-C (a distillation stops at its next step).
                return ExitCode::from(130);
            }
            ExitCode::FAILURE
        }
    }
}

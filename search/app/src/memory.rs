//! The peak host memory a command will hold, estimated before it starts: what the process holds
//! already, plus the largest of its phases, each the sum of what it allocates
//! (`genas_scoring::footprint`, `genas_engine::memory`). Every preflight of a search,
//! calibration, table and final distillation checks one of these against the memory available,
//! and says it; `experiments/scale/memory.sh` holds it against the measured peak.

use crate::experiment::LoadedExperiment;
use anyhow::Result;
use genas_engine::memory::{
    build_bytes, infer_bytes, largest_block_tensor, training_bytes, weight_bytes,
};
use genas_scoring::distill::DistillConfig;
use genas_scoring::footprint::{
    brief_bytes, evaluation_bytes, full_student_bytes, parent_bytes, proxies_bytes, step_bytes,
    teacher_pass_bytes, validation_bytes,
};
use genas_scoring::Split;
use genas_space::{Architecture, StudentInit};

/// What the allocator holds beyond the buffers counted: memory freed between phases that glibc
/// keeps for reuse rather than returning (measured 3–6% on the memory table,
/// experiments/scale/memory.sh).
pub const ALLOCATOR_SLACK: f64 = 1.05;

/// What a command makes resident after its preflight beyond what it allocates: the pages of
/// genas's code it runs from then on, its threads' stacks and the allocator's per-thread
/// arenas (measured 3–8 MB on the memory table's smallest teachers, where nothing else hides
/// them).
pub const RUNTIME_BYTES: f64 = 6e6;

/// One phase of a command: what it holds at once, part by part.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: &'static str,
    pub parts: Vec<(&'static str, f64)>,
}

impl Phase {
    pub fn bytes(&self) -> f64 {
        self.parts.iter().map(|p| p.1).sum()
    }
}

/// A command's estimated peak: the process now, and its phases one after another.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// What the estimate is for, as the refusal names it.
    pub what: String,
    /// Resident bytes of the process when the estimate was made (the program, the data as
    /// loaded).
    pub held: f64,
    pub phases: Vec<Phase>,
}

impl Estimate {
    /// The phase that holds the most.
    pub fn largest(&self) -> Option<&Phase> {
        self.phases
            .iter()
            .max_by(|a, b| a.bytes().total_cmp(&b.bytes()))
    }

    /// Estimated peak resident bytes of the command.
    pub fn peak(&self) -> f64 {
        (self.held + RUNTIME_BYTES + self.largest().map_or(0.0, Phase::bytes)) * ALLOCATOR_SLACK
    }

    /// `Ok` when the peak fits in the memory available now.
    pub fn check(&self) -> Result<()> {
        let available = genas_engine::memory::available_bytes() + self.held;
        genas_engine::memory::check_fits(&self.what, self.peak(), available)
            .map_err(anyhow::Error::msg)
    }

    /// This estimate with what the process holds measured again, as the work starts: the
    /// preflight's figure (what the check counts, a bound) still holds what it read to decide
    /// (a read-only view of the archive, the run's records).
    pub fn reheld(self) -> Estimate {
        Estimate {
            held: held_now(),
            ..self
        }
    }

    /// One line for the user: the peak and what makes it.
    pub fn line(&self) -> String {
        let mb = |b: f64| format!("{:.0} MB", b / 1e6);
        let Some(p) = self.largest() else {
            return format!("estimated peak memory {}", mb(self.peak()));
        };
        let parts: Vec<String> = p
            .parts
            .iter()
            .filter(|x| x.1 >= 0.5e6)
            .map(|(name, b)| format!("{name} {}", mb(*b)))
            .collect();
        format!(
            "estimated peak memory {} (held {}; {}: {})",
            mb(self.peak()),
            mb(self.held),
            p.name,
            parts.join(", ")
        )
    }
}

/// Resident bytes of this process now (0 where the system does not say). The pages of the
/// corpus's mapped token file are not counted: clean file pages the kernel takes back when it
/// needs them (a long run's resident memory shows them as its batches read them, up to the
/// file's size).
fn held_now() -> f64 {
    // What is free goes back first: only what is live stays held through the command.
    genas_engine::memory::give_back();
    genas_engine::memory::process_bytes().map_or(0.0, |(rss, _)| rss)
}

/// The phases of obtaining `l`'s teacher: a pretrained one read, and measured unless the
/// archive holds its measurement (`stored`); genas's own trained (unless `stored`) and read
/// back.
fn teacher_phases(l: &LoadedExperiment, teacher: &Architecture, stored: bool) -> Vec<Phase> {
    let exp = &l.experiment;
    let tb = exp.teacher.batch_size as usize;
    let w = weight_bytes(teacher, 4);
    let build = ("the teacher built (f64)", build_bytes(teacher, 4));
    if l.pretrained.is_some() {
        let mut phases = vec![
            Phase {
                name: "building the teacher",
                parts: vec![build],
            },
            Phase {
                name: "reading the teacher",
                parts: vec![
                    ("the teacher", w),
                    // `Checkpoint::load` beside the weights it writes.
                    (
                        "a tensor read",
                        genas_interop::pretrained::load_bytes(teacher),
                    ),
                ],
            },
        ];
        if !stored {
            phases.push(Phase {
                name: "measuring the teacher",
                parts: vec![(
                    "the teacher without gradients",
                    teacher_pass_bytes(teacher, tb, exp.fidelity.top_k as usize),
                )],
            });
        }
        return phases;
    }
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut phases = vec![Phase {
        name: "reading the teacher",
        parts: vec![("the teacher", w), ("its stored weights (f64)", 2.0 * w)],
    }];
    if !stored {
        phases.push(Phase {
            name: "training the teacher",
            parts: vec![(
                "the teacher in training",
                build_bytes(teacher, 4).max(training_bytes(teacher, tb, shards)),
            )],
        });
    }
    phases
}

/// The phase of computing the soft targets for a schedule at `cfg` and the validation set,
/// and measuring the parent students are pruned from.
fn targets_phase(
    l: &LoadedExperiment,
    teacher: &Architecture,
    cfg: &DistillConfig,
    shards: bool,
) -> Vec<Phase> {
    let val = validation(l, teacher, cfg);
    let mut phases = vec![Phase {
        name: "the teacher's soft targets",
        parts: vec![
            (
                "the teacher without gradients",
                teacher_pass_bytes(teacher, cfg.batch_size, cfg.top_k),
            ),
            (
                "a shard being written",
                if shards {
                    shard_bytes(teacher, cfg)
                } else {
                    0.0
                },
            ),
            ("the validation set's targets", val),
        ],
    }];
    if cfg.init == StudentInit::Teacher {
        let t = teacher.context as usize;
        let rows = genas_scoring::distill::PARENT_SEQUENCES;
        // The teacher runs over its sample with every layer read, then its weights are copied
        // into the parent a tensor at a time, each read out in f64 and narrowed in place: at
        // worst a late tensor twice over beside all copied before it (the embedding comes
        // first, an untied head last).
        let pass = infer_bytes(teacher, (rows, t), 4, false, true);
        let late = if teacher.tie_embeddings {
            largest_block_tensor(teacher)
        } else {
            teacher.vocab_size as usize * teacher.d_model as usize
        };
        let copy = parent_bytes(teacher) + 4.0 * late as f64;
        phases.push(Phase {
            name: "measuring the parent",
            parts: vec![
                ("the teacher", weight_bytes(teacher, 4)),
                (
                    if pass > copy {
                        "its pass without gradients, read by layer"
                    } else {
                        "the parent"
                    },
                    pass.max(copy),
                ),
                ("the validation set's targets", val),
            ],
        });
    }
    phases
}

/// Bytes of a shard of soft targets as it is written (`ShardWriter::flush`): its steps as
/// computed, the same as tensors, and the serialised file, each about `SHARD_BYTES` (less when
/// the whole schedule is smaller).
fn shard_bytes(teacher: &Architecture, cfg: &DistillConfig) -> f64 {
    let step = step_bytes(teacher, cfg.batch_size, cfg.top_k);
    let shard = (genas_scoring::inputs::SHARD_BYTES as f64 + step).min(f64::from(cfg.steps) * step);
    3.0 * shard
}

/// Bytes of the validation set's batches and targets, held through a distillation.
fn validation(l: &LoadedExperiment, teacher: &Architecture, cfg: &DistillConfig) -> f64 {
    let positions =
        l.data.eval_sequences(Split::Validation, cfg.val_sequences) * l.data.context as usize;
    validation_bytes(positions, teacher.vocab_size as usize, cfg.top_k)
}

/// Bytes of the parent students are pruned from, kept through the students' phase
/// (`init = "teacher"`).
fn kept_parent(teacher: &Architecture, cfg: &DistillConfig) -> f64 {
    if cfg.init == StudentInit::Teacher {
        parent_bytes(teacher)
    } else {
        0.0
    }
}

/// The students a search of `l` may train: every architecture within the constraints where
/// the space can be enumerated, else 20,000 seeded samples within them.
pub fn students(l: &LoadedExperiment) -> Vec<Architecture> {
    let exp = &l.experiment;
    let max = genas_space::search_space::EXACT_COUNT_MAX;
    if let Some(all) = l.space.architectures_within(&exp.constraints, max) {
        return all;
    }
    let mut rng = genas_space::Rng::seed_from_u64(0x5eed);
    (0..20_000)
        .map(|_| l.space.sample(&mut rng))
        .filter(|a| genas_space::satisfies(&genas_space::Cost::of(a), &exp.constraints))
        .collect()
}

/// The peak of a search (or calibration, or table) of `l` with `workers` students side by side
/// and rungs up to `steps`.
pub fn search(l: &LoadedExperiment, steps: u32, workers: usize) -> Result<Estimate> {
    let exp = &l.experiment;
    let cfg = DistillConfig::of_experiment(exp, steps);
    let teacher = l.teacher_architecture()?;
    // Whether this archive holds the teacher already is not known before it is opened.
    let mut phases = teacher_phases(l, &teacher, false);
    phases.extend(targets_phase(l, &teacher, &cfg, true));
    // Students train here on the engine, or elsewhere (the PyTorch runner's device, Slurm's
    // nodes), where this process computes only their zero-cost proxies.
    let trains_here = exp.executor.kind == genas_space::ExecutorKind::Local
        && matches!(
            genas_exec::torch::device_plan(exp),
            Ok(genas_exec::torch::DevicePlan::Engine { .. })
        );
    let (mut brief, mut proxies) = (0.0f64, 0.0f64);
    // A blockwise run trains the teacher with one sub-block replaced, whatever the
    // constraints, and keeps the teacher for its weights.
    let blockwise = !exp.search.mode.is_search();
    let trained = if blockwise {
        crate::blockwise::slots(l, &teacher)?
            .iter()
            .flat_map(|s| {
                s.variants.iter().map(|v| {
                    let mut a = teacher.clone();
                    a.layers[s.layer] = v.clone();
                    a
                })
            })
            .chain(students(l))
            .collect()
    } else {
        students(l)
    };
    for a in trained {
        if trains_here {
            brief = brief.max(brief_bytes(&a, &cfg));
        }
        proxies = proxies.max(proxies_bytes(&a, cfg.batch_size));
    }
    let (val, parent) = (validation(l, &teacher, &cfg), kept_parent(&teacher, &cfg));
    let workers = workers.max(1) as f64;
    let mse = blockwise && exp.search.block_objective == genas_space::BlockObjective::Mse;
    if mse {
        // Before the blocks train: a copy of the teacher runs every step once (its forward
        // allocates the training forward's buffers, f32), written through a buffer per layer.
        phases.push(Phase {
            name: "caching the teacher's activations",
            parts: vec![
                (
                    "the teacher kept for its weights",
                    weight_bytes(&teacher, 4),
                ),
                (
                    "a copy of the teacher and its passes",
                    weight_bytes(&teacher, 4)
                        + 4.0
                            * genas_engine::memory::train_act_values(
                                &teacher,
                                (cfg.batch_size, teacher.context as usize),
                            ) as f64,
                ),
                (
                    "a write buffer per layer",
                    teacher.layers.len() as f64 * (1u64 << 20) as f64,
                ),
                ("the parent", parent),
                ("the validation set's targets", val),
            ],
        });
    }
    phases.push(Phase {
        name: "the students",
        parts: vec![
            (
                "the teacher kept for its weights",
                if blockwise {
                    weight_bytes(&teacher, 4)
                } else {
                    0.0
                },
            ),
            (
                "the teacher's cached activations read a step at a time",
                if mse {
                    // One step's record as read (f32) and as the three vectors a step uses.
                    workers
                        * 12.0
                        * 3.0
                        * (cfg.batch_size * teacher.context as usize) as f64
                        * teacher.d_model as f64
                } else {
                    0.0
                },
            ),
            ("the parent", parent),
            ("the validation set's targets", val),
            (
                if trains_here {
                    "students side by side"
                } else {
                    "zero-cost proxies side by side (the students train on the device)"
                },
                workers * brief.max(proxies),
            ),
        ],
    });
    Ok(Estimate {
        what: format!(
            "{} ({} students side by side, the teacher and its soft targets for {steps} steps of fidelity.batch_size {})",
            exp.source.display(),
            workers,
            exp.fidelity.batch_size
        ),
        held: held_now(),
        phases,
    })
}

/// The peak of `genas distill` of `students` from `l`'s teacher for `steps` steps, one after
/// another in this process.
pub fn distill(l: &LoadedExperiment, students: &[Architecture], steps: u32) -> Result<Estimate> {
    let exp = &l.experiment;
    let cfg = DistillConfig::of_experiment(exp, steps);
    let teacher = l.teacher_architecture()?;
    // The search that made the run trained or measured the teacher.
    let mut phases = teacher_phases(l, &teacher, true);
    // The validation set's targets, and the parent, before the first student.
    phases.extend(targets_phase(l, &teacher, &cfg, false));
    let student = students
        .iter()
        .map(|a| full_student_bytes(a, &teacher, &cfg).max(evaluation_bytes(a, cfg.batch_size)))
        .fold(0.0, f64::max);
    let (val, parent) = (validation(l, &teacher, &cfg), kept_parent(&teacher, &cfg));
    phases.push(Phase {
        name: "the final distillation",
        parts: vec![
            ("the teacher", weight_bytes(&teacher, 4)),
            ("the parent", parent),
            ("the validation set's targets", val),
            ("the student", student),
        ],
    });
    Ok(Estimate {
        what: format!(
            "{}: distilling {} student(s) for {steps} steps",
            exp.source.display(),
            students.len()
        ),
        held: held_now(),
        phases,
    })
}

/// The device preflight of a search of `l` through the PyTorch runner with rungs up to
/// `steps`: every student the space holds within its constraints must fit a device slot at
/// some micro-batch (`genas_exec::device_memory`); the largest one's figures, or why not in
/// one line. None where training is not on a device whose memory is known.
pub fn device(l: &LoadedExperiment, steps: u32) -> Result<Option<String>> {
    let exp = &l.experiment;
    let Ok(genas_exec::torch::DevicePlan::Torch {
        options,
        slot_memory: Some(budget),
        ..
    }) = genas_exec::torch::device_plan(exp)
    else {
        return Ok(None);
    };
    let cfg = DistillConfig::of_experiment(exp, steps);
    let options = options.at(cfg.precision);
    let targets = genas_exec::device_memory::Targets::of(l.data.vocab_size(), cfg.top_k);
    let mut largest: Option<(u64, String)> = None;
    for a in students(l) {
        let job = genas_exec::device_memory::DeviceJob {
            arch: &a,
            batch: cfg.batch_size as u64,
            seq: u64::from(a.context),
            targets,
            teacher: None,
            options: &options,
        };
        let e = genas_exec::device_memory::fit(&job, budget).map_err(|why| {
            anyhow::anyhow!(
                "{}: the PyTorch runner: the student {} ({}) {why}; lower [constraints] max_params, fidelity.batch_size or search.device_jobs, or set search.checkpointing = true",
                exp.source.display(),
                a.summary(),
                a.id()
            )
        })?;
        if largest.as_ref().is_none_or(|(t, _)| e.total() > *t) {
            largest = Some((e.total(), format!("{} ({})", e.line(), a.summary())));
        }
    }
    Ok(largest.map(|(_, line)| {
        format!(
            "device memory per slot {:.0} MB; the largest student needs {line}",
            budget as f64 / 1e6
        )
    }))
}

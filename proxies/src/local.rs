//! Blockwise local distillation with the normalised MSE (Puzzle's BLD): one sub-block of the
//! teacher's network, replaced by a variant, trained to give the teacher's output of that
//! sub-block from the teacher's own input to it. Every other weight of the network is the
//! teacher's and held, so the input is exactly the teacher's activation; each step runs the
//! teacher and the network up to the block and the backward of that block alone, so a step
//! costs about the blocks below it, not the whole network and its vocabulary. With the
//! teacher's activations cached once ([`cache_activations`]: one teacher pass per step for
//! every layer at once, a file per layer, read back a step at a time), a step costs the one
//! block's forward and backward.

use crate::distill::{brief_setup, evaluated, DistillConfig, DistillResult, TeacherTargets};
use genas_engine::{Backend, Model};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which sub-block trains: layer `layer`'s attention half (`attention`) or its FFN half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubBlock {
    pub layer: usize,
    pub attention: bool,
}

/// ‖y − y_t‖² / ‖y_t − x‖² over the batch, and its gradient with respect to y: the squared
/// error of the sub-block's output `y` against the teacher's `y_t`, relative to what the
/// teacher's sub-block adds to its input `x` (the residual branch), so sub-blocks of every
/// size and depth score on one scale. A sub-block that adds nothing gives the unnormalised
/// error.
pub fn normalised_mse(y: &[f64], y_t: &[f64], x: &[f64]) -> (f64, Vec<f64>) {
    let branch: f64 = y_t.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
    let scale = if branch > 0.0 { 1.0 / branch } else { 1.0 };
    let loss: f64 = y
        .iter()
        .zip(y_t)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        * scale;
    let grad = y
        .iter()
        .zip(y_t)
        .map(|(a, b)| 2.0 * (a - b) * scale)
        .collect();
    (loss, grad)
}

/// Where the teacher's activations around the trained block come from.
pub enum Activations<'a, B: Backend> {
    /// Its network, run up to the block each step.
    Teacher(&'a mut Model<B>),
    /// Read from the layer's cache file, a step at a time.
    Cached(&'a mut LayerActivations),
}

/// Trains `sub` of `model` (the teacher's network with that sub-block replaced; every other
/// weight the teacher's) against the teacher's activations on the cached schedule's batches
/// for `cfg.steps` steps (at most the schedule's length), with the optimiser and schedule of
/// brief distillation and only the parameters named by `cfg.train_only` updated; then scores
/// the whole network against the teacher (its replace-one KL and validation loss). The
/// result's `train_loss` is the mean normalised MSE of the last 20 steps. Both sources of
/// activations give the same result, to the bit.
pub fn local_distill<B: Backend>(
    model: &mut Model<B>,
    mut teacher: Activations<'_, B>,
    targets: &TeacherTargets,
    cfg: &DistillConfig,
    sub: SubBlock,
) -> DistillResult {
    let start = Instant::now();
    let (steps, tcfg, mut opt) = brief_setup(model, targets, cfg);
    let l = sub.layer;
    let mut recent = Vec::new();
    for step in 0..steps {
        // The sub-block's input x (the block's for attention, the attention's output for
        // FFN) and the teacher's output of it, y_t.
        let (x, y_t) = match &mut teacher {
            Activations::Teacher(teacher) => {
                let batch = targets.schedule.batch(step as usize);
                let bt = (batch.b, batch.t);
                teacher.forward_blocks(&batch.inputs, bt, l, false);
                let y_t = teacher.block_output(l, sub.attention);
                let x = if sub.attention {
                    teacher.block_input(l)
                } else {
                    teacher.block_output(l, true)
                };
                model.forward_blocks(&batch.inputs, bt, l, true);
                (Cow::Owned(x), Cow::Owned(y_t))
            }
            Activations::Cached(cache) => {
                let (b, t) = (cache.b, cache.t);
                let [input, mid, out] = match cache.read(step as usize) {
                    Ok(v) => v,
                    Err(e) => {
                        return DistillResult {
                            steps: step,
                            train_loss: None,
                            eval: None,
                            diverged: Some(format!("the teacher's activations: {e}")),
                            seconds: start.elapsed().as_secs_f64(),
                        }
                    }
                };
                // The blocks below are the teacher's: the block's input is the teacher's.
                model.forward_block_from(l, input, (b, t), true);
                if sub.attention {
                    (Cow::Borrowed(&input[..]), Cow::Borrowed(&mid[..]))
                } else {
                    (Cow::Borrowed(&mid[..]), Cow::Borrowed(&out[..]))
                }
            }
        };
        let y = model.block_output(l, sub.attention);
        let (loss, dy) = normalised_mse(&y, &y_t, &x);
        if !loss.is_finite() {
            return DistillResult {
                steps: step,
                train_loss: None,
                eval: None,
                diverged: Some(format!("the block's loss is {loss} at step {step}")),
                seconds: start.elapsed().as_secs_f64(),
            };
        }
        model.backward_block(l, &dy, sub.attention);
        if let Err(norm) = opt.update(model, tcfg.lr_at(step), &tcfg) {
            return DistillResult {
                steps: step,
                train_loss: None,
                eval: None,
                diverged: Some(format!("gradient norm {norm} at step {step}")),
                seconds: start.elapsed().as_secs_f64(),
            };
        }
        recent.push(loss);
    }
    evaluated(model, targets, steps, &recent, start)
}

/// One layer's cached teacher activations: for each step of the schedule, the block's input,
/// its attention half's output and its output (each B·T × C, f32, as the engine holds them),
/// one record after another in one file.
pub struct LayerActivations {
    file: File,
    pub b: usize,
    pub t: usize,
    c: usize,
    steps: usize,
    buf: Vec<u8>,
    parts: [Vec<f64>; 3],
}

impl LayerActivations {
    /// Opens the cache file `path` of `steps` steps of (b, t) × c; refuses one of another
    /// size.
    pub fn open(
        path: &Path,
        steps: usize,
        (b, t, c): (usize, usize, usize),
    ) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let want = (steps * record_bytes(b, t, c)) as u64;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if len != want {
            return Err(format!(
                "{}: {len} bytes, expected {want} ({steps} steps of {b}×{t}×{c})",
                path.display()
            ));
        }
        Ok(LayerActivations {
            file,
            b,
            t,
            c,
            steps,
            buf: Vec::new(),
            parts: Default::default(),
        })
    }

    /// Step `i`'s block input, attention output and block output (read into buffers kept
    /// from step to step).
    pub fn read(&mut self, i: usize) -> Result<&[Vec<f64>; 3], String> {
        if i >= self.steps {
            return Err(format!("step {i} of {} cached", self.steps));
        }
        let rec = record_bytes(self.b, self.t, self.c);
        self.buf.resize(rec, 0);
        self.file
            .seek(SeekFrom::Start((i * rec) as u64))
            .and_then(|_| self.file.read_exact(&mut self.buf))
            .map_err(|e| format!("step {i}: {e}"))?;
        let n = rec / 3 / 4;
        for (k, part) in self.parts.iter_mut().enumerate() {
            part.clear();
            part.extend(
                self.buf[k * n * 4..(k + 1) * n * 4]
                    .chunks_exact(4)
                    .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f64),
            );
        }
        Ok(&self.parts)
    }
}

fn record_bytes(b: usize, t: usize, c: usize) -> usize {
    3 * b * t * c * 4
}

/// The cache files of `teacher`'s activations over the first `steps` steps of `targets`'
/// schedule, one per layer (`dir/NAME-L{l}.f32`, NAME from the teacher's weights and the
/// steps' tokens, so a resumed run finds them and another teacher or schedule never does):
/// computed in one teacher pass per step for every layer at once, or found. Only the steps'
/// batches are read (twice: to name the files, then to compute them), never their soft
/// targets. Every step must
/// have one batch shape (b, t), returned with the paths.
pub fn cache_activations<B: Backend>(
    teacher: &mut Model<B>,
    targets: &TeacherTargets,
    steps: usize,
    dir: &Path,
) -> Result<(Vec<PathBuf>, (usize, usize)), String> {
    let steps = steps.min(targets.schedule.len());
    if steps == 0 {
        return Err("no steps to cache".into());
    }
    let (b, t, _) = targets.schedule.shape(0);
    let c = teacher.arch.d_model as usize;
    let depth = teacher.arch.layers.len();
    let mut h = Sha256::new();
    h.update(b"genas block activations v1");
    h.update(teacher.arch.id().as_bytes());
    for i in 0..teacher.params.len() {
        let bytes: Vec<u8> = teacher
            .weights(i)
            .iter()
            .flat_map(|&w| (w as f32).to_le_bytes())
            .collect();
        h.update(&bytes);
    }
    h.update((steps as u64).to_le_bytes());
    for i in 0..steps {
        if targets.schedule.shape(i).0 != b || targets.schedule.shape(i).1 != t {
            return Err(format!("step {i}'s batch is not {b}×{t}"));
        }
        let batch = targets.schedule.batch(i);
        let bytes: Vec<u8> = batch.inputs.iter().flat_map(|t| t.to_le_bytes()).collect();
        h.update(&bytes);
    }
    let name = genas_space::hex16(h);
    let paths: Vec<PathBuf> = (0..depth)
        .map(|l| dir.join(format!("{name}-L{l}.f32")))
        .collect();
    let want = (steps * record_bytes(b, t, c)) as u64;
    if paths
        .iter()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == want))
    {
        return Ok((paths, (b, t)));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp: Vec<PathBuf> = paths
        .iter()
        .map(|p| p.with_extension(format!("{}.tmp", std::process::id())))
        .collect();
    let mut out: Vec<BufWriter<File>> = tmp
        .iter()
        .map(|p| {
            File::create(p)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let written = (|| -> Result<(), String> {
        for i in 0..steps {
            let batch = targets.schedule.batch(i);
            teacher.forward_blocks(&batch.inputs, (b, t), depth - 1, false);
            for (l, w) in out.iter_mut().enumerate() {
                for part in [
                    teacher.block_input(l),
                    teacher.block_output(l, true),
                    teacher.block_output(l, false),
                ] {
                    let bytes: Vec<u8> = part
                        .iter()
                        .flat_map(|&v| (v as f32).to_le_bytes())
                        .collect();
                    w.write_all(&bytes).map_err(|e| e.to_string())?;
                }
            }
        }
        for w in out.drain(..) {
            w.into_inner()
                .map_err(|e| e.to_string())?
                .sync_all()
                .map_err(|e| e.to_string())?;
        }
        for (from, to) in tmp.iter().zip(&paths) {
            std::fs::rename(from, to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        for p in &tmp {
            let _ = std::fs::remove_file(p);
        }
        return Err(format!(
            "caching the teacher's activations in {}: {e}",
            dir.display()
        ));
    }
    Ok((paths, (b, t)))
}

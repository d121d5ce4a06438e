//! Device slots: long-lived PyTorch runner processes (`runner.py --serve`), each started
//! once, pinned to one GPU with `CUDA_VISIBLE_DEVICES`, and fed job directories over a pipe,
//! so torch is imported once per slot rather than once per job. A node's GPUs each get
//! `search.device_jobs` slots.
//!
//! A slot whose process dies (killed, out of memory, a crash of the interpreter) is started
//! again and its job retried, up to [`RETRIES`] times, as the Slurm executor resubmits a task
//! that vanished; a job that fails on its own (the runner answers `failed DIR: why`) is not
//! retried: it would fail the same way.
//!
//! It knows the runner's serve protocol, not what a job holds.

use crate::local::last_lines;
use crate::torch::{read_result, runner_threads, TorchResult, RUNNER_PY};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Condvar, Mutex};

/// Times a job whose slot died is run again on a restarted slot.
pub const RETRIES: usize = 2;

/// Lines of a dead slot's log kept in its error.
const LOG_LINES: usize = 5;

/// One runner process and its pipes.
struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// A slot: the GPU it is pinned to (none: the process sees whatever the machine has) and its
/// process, started on first use.
struct Slot {
    index: usize,
    gpu: Option<u32>,
    process: Option<Process>,
}

/// The pool of slots.
pub struct Slots {
    python: String,
    device: String,
    dir: PathBuf,
    free: Mutex<Vec<Slot>>,
    wake: Condvar,
    count: usize,
    /// Told of each restart, one line.
    say: Box<dyn Fn(&str) + Send + Sync>,
}

/// What became of a job sent to a slot.
enum Answer {
    Done,
    Failed(String),
    /// The process died; why, from its log.
    Died(String),
}

impl Slots {
    /// `per_gpu` slots on each of `gpus` (or `per_gpu` unpinned slots when `gpus` is empty),
    /// running `python runner.py --serve --device DEVICE`; `runner.py` and each slot's log
    /// (`slot-K.log`) are written in `dir`. Nothing starts until a job needs a slot.
    pub fn new(
        python: &str,
        device: &str,
        gpus: &[u32],
        per_gpu: usize,
        dir: &Path,
        say: Box<dyn Fn(&str) + Send + Sync>,
    ) -> std::io::Result<Slots> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("runner.py"), RUNNER_PY)?;
        let pinned: Vec<Option<u32>> = if gpus.is_empty() {
            vec![None]
        } else {
            gpus.iter().map(|&g| Some(g)).collect()
        };
        // Slot k on GPU k mod n: the first slots spread over every GPU.
        let per_gpu = per_gpu.max(1);
        let free: Vec<Slot> = (0..pinned.len() * per_gpu)
            .map(|index| Slot {
                index,
                gpu: pinned[index % pinned.len()],
                process: None,
            })
            .rev()
            .collect();
        Ok(Slots {
            python: python.into(),
            device: device.into(),
            dir: dir.into(),
            count: free.len(),
            free: Mutex::new(free),
            wake: Condvar::new(),
            say,
        })
    }

    /// How many jobs can run at once.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Runs the job in `job_dir` on the first free slot (waiting for one) and reads its
    /// result.
    pub fn run(&self, job_dir: &Path) -> Result<TorchResult, String> {
        let mut slot = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(s) = free.pop() {
                    break s;
                }
                free = self.wake.wait(free).unwrap_or_else(|e| e.into_inner());
            }
        };
        let out = self.run_on(&mut slot, job_dir);
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
        self.wake.notify_one();
        out
    }

    fn run_on(&self, slot: &mut Slot, job_dir: &Path) -> Result<TorchResult, String> {
        let mut tries = 0;
        loop {
            match self.ask(slot, job_dir) {
                Answer::Done => return read_result(job_dir).map_err(|e| format!("{e:#}")),
                Answer::Failed(why) => return Err(format!("the PyTorch runner failed: {why}")),
                Answer::Died(why) if tries < RETRIES => {
                    tries += 1;
                    (self.say)(&format!(
                        "runner slot {}{} died ({why}); started again, its job retried ({tries} of {RETRIES})",
                        slot.index,
                        slot.gpu.map(|g| format!(" (GPU {g})")).unwrap_or_default()
                    ));
                }
                Answer::Died(why) => {
                    return Err(format!(
                        "the PyTorch runner's slot died {} times: {why}",
                        RETRIES + 1
                    ))
                }
            }
        }
    }

    /// Sends `job_dir` to the slot's process (started if it has none) and waits for its
    /// answer.
    fn ask(&self, slot: &mut Slot, job_dir: &Path) -> Answer {
        if slot.process.is_none() {
            match self.start(slot) {
                Ok(p) => slot.process = Some(p),
                Err(e) => return Answer::Died(e),
            }
        }
        let Some(p) = slot.process.as_mut() else {
            return Answer::Died("not started".into());
        };
        let line = format!("{}\n", job_dir.display());
        let mut answer = String::new();
        let asked = p
            .stdin
            .write_all(line.as_bytes())
            .and_then(|_| p.stdin.flush())
            .and_then(|_| p.stdout.read_line(&mut answer));
        match asked {
            Ok(n) if n > 0 => {
                let answer = answer.trim_end();
                let dir = job_dir.display().to_string();
                if answer == format!("done {dir}") {
                    Answer::Done
                } else if let Some(why) = answer.strip_prefix(&format!("failed {dir}: ")) {
                    Answer::Failed(why.to_string())
                } else {
                    self.bury(slot, &format!("it answered {answer:?}"))
                }
            }
            Ok(_) => self.bury(slot, "it closed its output"),
            Err(e) => self.bury(slot, &e.to_string()),
        }
    }

    /// Ends a slot's process (whatever state it is in) and says why it died.
    fn bury(&self, slot: &mut Slot, what: &str) -> Answer {
        let mut status = String::new();
        if let Some(mut p) = slot.process.take() {
            let _ = p.child.kill();
            if let Ok(s) = p.child.wait() {
                status = format!("{s}, ");
            }
        }
        let log = std::fs::read(self.log(slot)).unwrap_or_default();
        Answer::Died(format!("{status}{what}: {}", last_lines(&log, LOG_LINES)))
    }

    fn log(&self, slot: &Slot) -> PathBuf {
        self.dir.join(format!("slot-{}.log", slot.index))
    }

    fn start(&self, slot: &Slot) -> Result<Process, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(slot))
            .map_err(|e| format!("{}: {e}", self.log(slot).display()))?;
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.join("runner.py"))
            .args(["--serve", "--device", &self.device])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        if let Some(g) = slot.gpu {
            cmd.env("CUDA_VISIBLE_DEVICES", g.to_string());
        }
        if let Some(n) = runner_threads(&self.device, self.count) {
            cmd.env("OMP_NUM_THREADS", n.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{} could not be run ({e})", self.python))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("its pipes could not be opened".into());
        };
        Ok(Process {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }
}

impl Drop for Slots {
    /// Closes every slot's input (the runner ends after its job) and waits for it.
    fn drop(&mut self) {
        let free = std::mem::take(self.free.get_mut().unwrap_or_else(|e| e.into_inner()));
        for slot in free {
            if let Some(p) = slot.process {
                let Process {
                    mut child, stdin, ..
                } = p;
                drop(stdin);
                let _ = child.wait();
            }
        }
    }
}

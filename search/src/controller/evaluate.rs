//! A rung's evaluations: cache hits known at once, the rest as jobs for the executor,
//! every result committed in queue order with the controller state that consumed it.

use super::{cache_key, front_and_hypervolume, Controller, Progress, RunPlan, RungResult};
use crate::error::{Result, SearchError};
use crate::job::{init_seed, Job, Output};
use genas_scoring::distill::DistillResult;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A rung result waiting for its turn to be committed: the result, the measured latency and
/// the cache key to store it under (none for a cache hit).
type Finished = (RungResult, Option<f64>, Option<String>);

impl Controller<'_> {
    /// Evaluates the current rung's queue; false if stopped before it completed.
    pub(super) fn rung(&mut self, progress: &Progress) -> Result<bool> {
        let rung = self.state.rung;
        let cfg = self.rung_config(rung);
        let top = rung == self.top();
        let pending: Vec<String> = self
            .state
            .queue
            .iter()
            // A failed result is evaluated again.
            .filter(|id| {
                !self.cands[*id]
                    .rungs
                    .iter()
                    .any(|r| r.rung == rung && r.failed.is_none())
            })
            .cloned()
            .collect();
        let label = format!(
            "round {} rung {} ({} steps)",
            self.state.round + 1,
            rung + 1,
            cfg.steps
        );
        let total = self.state.queue.len();
        let already = total - pending.len();
        // Results are committed in queue order: one waits until those before it are in.
        // Cache hits are known at once; the executor runs the rest.
        let finished: Mutex<BTreeMap<usize, Finished>> = Mutex::new(BTreeMap::new());
        let committed = Mutex::new(0usize);
        let error: Mutex<Option<SearchError>> = Mutex::new(None);
        let seed = self.cx.experiment.teacher.seed;
        let (plan, archive, stop, workers, executor) = (
            self.cx.plan.clone(),
            self.cx.archive,
            self.cx.stop,
            self.cx.workers,
            self.cx.executor,
        );
        // The jobs, and for each its place in the queue and its cache key.
        let mut batch: Vec<Job> = Vec::new();
        let mut slots: Vec<(usize, String)> = Vec::new();
        for (i, id) in pending.iter().enumerate() {
            let key = cache_key(id, &plan, &cfg);
            // An entry this genas cannot read is a miss, never an error.
            let cached = archive.cached::<DistillResult>(&key).ok().flatten();
            match cached {
                // The top rung measures latency, so it always trains.
                Some(result) if !top => {
                    let rr = RungResult {
                        rung,
                        steps: cfg.steps,
                        result,
                        cached: true,
                        failed: None,
                    };
                    finished.lock().expect("f").insert(i, (rr, None, None));
                }
                _ => {
                    slots.push((i, key));
                    batch.push(Job {
                        id: id.clone(),
                        architecture: self.cands[id].architecture.clone(),
                        init_seed: init_seed(seed, id),
                        rung,
                        config: cfg.clone(),
                        measure_latency: top,
                        initial: None,
                    });
                }
            }
        }
        let this = Mutex::new(&mut *self);
        // Commits every result that is next in queue order; false once a commit failed.
        let commit_ready = || -> bool {
            let mut c = committed.lock().expect("c");
            loop {
                let item = finished.lock().expect("f").remove(&*c);
                let Some((rr, lat, ck)) = item else { break };
                let pid = pending[*c].clone();
                let mut me = this.lock().expect("controller");
                if let Err(e) = me.record_result(&pid, rr, lat, ck, &plan) {
                    *error.lock().expect("e") = Some(e);
                    return false;
                }
                *c += 1;
                progress(&label, already + *c, total);
            }
            true
        };
        // Failures by class: how many, and the first one's message.
        let failures: Mutex<BTreeMap<String, (usize, String)>> = Mutex::new(BTreeMap::new());
        let mut ran = Ok(());
        if commit_ready() && !batch.is_empty() {
            ran = executor.run(&batch, workers, stop, &|k, out: Output| {
                let (i, key) = &slots[k];
                if let Some(class) = &out.failed {
                    let mut f = failures.lock().expect("failures");
                    let why = out.result.diverged.clone().unwrap_or_default();
                    f.entry(class.clone()).or_insert((0, why)).0 += 1;
                }
                finished.lock().expect("f").insert(
                    *i,
                    (
                        RungResult {
                            rung,
                            steps: cfg.steps,
                            result: out.result,
                            cached: false,
                            failed: out.failed.clone(),
                        },
                        out.latency_ms_per_token,
                        // A result the executor could not get is no distillation result.
                        out.failed.is_none().then(|| key.clone()),
                    ),
                );
                commit_ready()
            });
        }
        if let Some(e) = error.into_inner().expect("e") {
            return Err(e);
        }
        ran?;
        let failures = failures.into_inner().expect("failures");
        for (n, why) in failures.values() {
            (self.cx.warn)(&format!(
                "warning: {n} of {} job(s) of {label} failed: {why}",
                batch.len()
            ));
        }
        let failed: usize = failures.values().map(|(n, _)| n).sum();
        if failed > 0 && failed == batch.len() {
            let why = failures
                .values()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SearchError::AllFailed {
                label,
                jobs: batch.len(),
                why,
            });
        }
        let done = committed.into_inner().expect("c");
        if done < pending.len() {
            return Ok(false);
        }
        self.finish_rung()?;
        Ok(true)
    }

    pub(super) fn record_result(
        &mut self,
        id: &str,
        rr: RungResult,
        latency: Option<f64>,
        cache: Option<String>,
        plan: &RunPlan,
    ) -> Result<()> {
        let rung = rr.rung;
        let cache_entry = match cache {
            Some(k) => vec![(k, serde_json::to_value(&rr.result)?)],
            None => vec![],
        };
        {
            let c = self.cands.get_mut(id).expect("queued");
            // A failure at this rung, evaluated again, gives way to the new result.
            c.rungs.retain(|r| r.rung != rung || r.failed.is_none());
            c.rungs.push(rr);
            if latency.is_some() {
                c.latency_ms_per_token = latency;
            }
        }
        self.state.evaluations += 1;
        self.state.per_rung[rung] += 1;
        let (front, hv) = front_and_hypervolume(&self.cands, self.top(), plan);
        self.state.front = front;
        self.state.hypervolume.push((self.state.evaluations, hv));
        let ev = serde_json::json!({"event": "evaluated", "candidate": id, "rung": rung, "hypervolume": hv});
        self.commit(&[id], &[ev], &cache_entry)
    }
}

//! Candidates side by side: each worker thread owns a single-threaded CPU engine and takes the
//! next item; results come back in item order. Every result depends only on its item, so
//! what the caller gets does not depend on the number of workers.

use genas_proxies::engine::Cpu;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Worker threads for `threads` (0 = every core).
pub fn worker_count(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
}

/// `f` over `items` on `workers` threads (one single-threaded engine each); results in order.
/// `progress(done, total, result)` is called as each item finishes.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: &(dyn Fn(&T, &Cpu<f32>) -> R + Sync),
    progress: &(dyn Fn(usize, usize, &R) + Sync),
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                let be = Cpu::<f32>::new(1);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(x) = items.get(i) else { break };
                    let r = f(x, &be);
                    progress(done.fetch_add(1, Ordering::SeqCst) + 1, items.len(), &r);
                    slots.lock().expect("no worker panics holding it")[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_inner()
        .expect("workers finished")
        .into_iter()
        .map(|r| r.expect("every item done"))
        .collect()
}

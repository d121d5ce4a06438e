//! Data-parallel training steps: on two or more threads a batch is split into shards, each
//! with its own activations, whose gradients add up to the whole batch's.

use super::*;
use crate::backend::Backend;

/// One worker of a data-parallel step: its backend, activations and gradients.
pub(super) struct Shard<B: Backend> {
    pub(super) be: B,
    pub(super) acts: Option<Acts<B::Buf>>,
    pub(super) grads: Vec<B::Buf>,
}

impl<B: Backend> Model<B> {
    /// One training step's forward and backward with the data loss (cross-entropy), leaving
    /// the gradients ready for the optimizer. Where the backend has workers (CPU, 2+ threads)
    /// the batch is split across them in fixed contiguous shares, each trains on its share with
    /// single-threaded kernels, and the gradient is Σ (n_s / N)·g_s in shard order: the
    /// full-batch gradient, deterministic for a given thread count. It stays in the shards
    /// until read (`grad`), or is combined by the optimizer as it updates.
    pub fn forward_backward(
        &mut self,
        tokens: &[u32],
        targets: &[u32],
        (b, t): (usize, usize),
    ) -> Loss {
        assert!(t <= self.arch.context as usize && tokens.len() == b * t && targets.len() == b * t);
        if self.shards.is_empty() {
            let workers = self.be.workers();
            self.shards = workers
                .into_iter()
                .map(|be| {
                    let grads = self.params.iter().map(|p| be.zeros(p.numel())).collect();
                    Shard {
                        be,
                        acts: None,
                        grads,
                    }
                })
                .collect();
        }
        let s = self.shards.len();
        if s < 2 || b < s {
            let loss = self
                .forward(tokens, Some(targets), None, (b, t), true)
                .expect("targets given");
            self.backward(tokens);
            return loss;
        }
        let net = Net {
            w: &self.weights,
            masks: &self.masks,
            blocks: &self.blocks,
            arch: &self.arch,
            ids: Ids {
                wte: self.wte,
                wpe: self.wpe,
                lnf: self.lnf,
                head: self.head,
            },
        };
        let bounds: Vec<usize> = (0..=s).map(|k| k * b / s).collect();
        let losses: Vec<Loss> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .shards
                .iter_mut()
                .enumerate()
                .map(|(k, sh)| {
                    let (r0, r1) = (bounds[k], bounds[k + 1]);
                    let (tok, tgt) = (&tokens[r0 * t..r1 * t], &targets[r0 * t..r1 * t]);
                    let net = &net;
                    scope.spawn(move || {
                        let bs = r1 - r0;
                        if !sh.acts.as_ref().is_some_and(|a| a.b == bs && a.t == t) {
                            sh.acts = Some(alloc_acts(&sh.be, net.blocks, net.arch, bs, t));
                        }
                        let a = sh.acts.as_mut().expect("allocated");
                        let loss =
                            forward_pass(net, &sh.be, a, tok, Some(tgt), None, (bs, t), true)
                                .expect("targets given");
                        backward_pass(net, &sh.be, a, &mut sh.grads, tok, None);
                        loss
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a training worker panicked"))
                .collect()
        });
        let fractions: Vec<f64> = (0..s)
            .map(|k| (bounds[k + 1] - bounds[k]) as f64 / b as f64)
            .collect();
        let loss = Loss {
            loss: losses.iter().zip(&fractions).map(|(l, f)| l.loss * f).sum(),
            ce: losses.iter().zip(&fractions).map(|(l, f)| l.ce * f).sum(),
        };
        self.pending = Some(fractions);
        loss
    }
}

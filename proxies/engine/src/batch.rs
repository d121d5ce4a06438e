//! What training steps through: batches of token ids, and the source that draws them.

use genas_space::Rng;

/// One batch of B sequences of T tokens: `inputs` and next-token `targets`, both (B, T).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// Where [`crate::train::train`] draws its batches: a data set's training split. The engine
/// knows batches, not files; the data set (in the scoring crate) implements this.
pub trait TrainBatches {
    /// A batch of `b` training sequences at positions drawn from `rng`.
    fn train_batch(&self, b: usize, rng: &mut Rng) -> Batch;
}

//! genas-space: what a candidate *is*.
//!
//! Owns the experiment file (`Experiment`, strict TOML), the declared search space
//! (`SearchSpace`: checked choice lists, exact counting, uniform sampling, one-gene mutation,
//! crossover), the concrete network description (`Architecture`, canonical JSON and content id),
//! the analytic cost model (`Cost`), and the portable seeded `Rng` that every random choice in
//! genas draws from.
//!
//! It must not know about training, data files, storage or the command line: the vocabulary
//! size and context length come in as numbers from whoever read the data. It owns one rule
//! every crate follows when it reads a file a user names (`files`: regular files only, through
//! a byte limit).
//!
//! ```
//! use genas_space::{Experiment, SearchSpace, Rng, Cost};
//! let exp = Experiment::from_str_in(r#"
//!     [data]
//!     kind = "text"
//!     path = "corpus.txt"
//!     seq_len = 64
//!     [space]
//!     depth = [2, 4]
//!     d_model = [64, 128]
//!     heads = [2, 4]
//!     attention = ["full", "linear"]
//! "#, "example.toml", std::path::Path::new(".")).unwrap();
//! let space = SearchSpace::new(&exp.space, 65, exp.data.context()).unwrap();
//! let arch = space.sample(&mut Rng::seed_from_u64(1));
//! assert!(space.contains(&arch));
//! assert!(Cost::of(&arch).params > 0);
//! ```

pub mod arch;
pub mod cost;
pub mod experiment;
pub mod files;
pub mod rng;
pub mod search_space;

pub use arch::{
    rope_inv_freq, Activation, ArchError, Architecture, Attention, Ffn, Float, Fraction, Layer,
    Norm, Position, RopeScaling, Sparsity, DEFAULT_ROPE_THETA, NORM_EPS,
};
pub use cost::{Cost, LayerCost};
pub use experiment::{
    BlockObjective, BlockScore, Constraints, DataConfig, DataKind, Device, ExecutorConfig,
    ExecutorKind, Experiment, ExperimentError, FidelityConfig, Objective, Precision, SearchConfig,
    SpaceConfig, Strategy, StudentInit, TeacherConfig, Tokenizer, MAX_EXPERIMENT_BYTES,
};
pub use rng::Rng;
pub use search_space::{satisfies, Genome, SearchSpace, SpaceError, SpaceSummary};

/// The first 16 hex digits of a SHA-256: the form of every key and fingerprint genas keeps.
pub fn hex16(h: sha2::Sha256) -> String {
    use sha2::Digest;
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

//! Why a search cannot go on: one line, from the archive, the executor or the space.

use crate::job::ExecError;
use genas_space::SpaceError;
use genas_store::StoreError;

/// An error of the controller. Everything committed before it stays committed, so the run
/// resumes from there.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The archive refused a read or a commit.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The executor could not go on.
    #[error(transparent)]
    Executor(#[from] ExecError),
    /// The space cannot give the reference point (nothing in it satisfies the constraints).
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// Every job of a batch failed (`Output::failed`): nothing evaluates, so the search
    /// stops rather than record a whole batch of failures. The failures are recorded; a
    /// resumed run evaluates them again.
    #[error("every job of {label} failed ({jobs} job(s)): {why}")]
    AllFailed {
        label: String,
        jobs: usize,
        why: String,
    },
    /// A result could not be written as JSON for the evaluation cache.
    #[error("cannot encode an evaluation result: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;

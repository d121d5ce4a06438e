//! How a strategy proposes: one file per strategy, each behind [`Strategy`]. A strategy sees
//! the population and the candidates' records through a [`Pool`] and draws from the run's
//! random stream; it never sees the archive, the schedule or how evaluations run. The
//! controller checks every proposal against the constraints and the run's known
//! architectures, and falls back to uniform draws when a strategy keeps repeating itself.

mod evolution;
mod nsga2;
mod random;

pub use evolution::Evolution;
pub use nsga2::Nsga2;
pub use random::Random;

use super::{selection_order, CandidateRecord};
use genas_space::{Architecture, Objective, Rng, SearchSpace};
use std::collections::BTreeMap;

/// What a strategy may read (and the random stream it draws from).
pub struct Pool<'a> {
    pub space: &'a SearchSpace,
    pub rng: &'a mut Rng,
    /// Evolution: the aging population (oldest first); NSGA-II: the parents.
    pub population: &'a [String],
    pub cands: &'a BTreeMap<String, CandidateRecord>,
    pub objectives: &'a [Objective],
    /// `[search] population` and `tournament`.
    pub size: usize,
    pub tournament: usize,
}

impl Pool<'_> {
    /// The best of `k` members drawn with replacement (selection order: rung, then Pareto
    /// rank); `None` with an empty population.
    pub fn tournament(&mut self, k: usize) -> Option<String> {
        if self.population.is_empty() {
            return None;
        }
        let picks: Vec<String> = (0..k.max(1))
            .map(|_| self.population[self.rng.index(self.population.len())].clone())
            .collect();
        selection_order(&picks, self.cands, self.objectives)
            .into_iter()
            .next()
    }
}

/// A search strategy.
pub trait Strategy: Sync {
    /// One architecture and how it came about ("random", "mutation of ID", ...); `None`
    /// when the population cannot give one.
    fn propose(&self, pool: &mut Pool<'_>) -> Option<(Architecture, String)>;

    /// The population of the next round, once `evaluated` (this round's candidates that
    /// were not screened out, in proposal order) have their results.
    fn next_population(&self, pool: &Pool<'_>, evaluated: Vec<String>) -> Vec<String>;
}

/// The strategy an experiment names.
pub fn of(kind: genas_space::Strategy) -> &'static dyn Strategy {
    match kind {
        genas_space::Strategy::Random => &Random,
        genas_space::Strategy::Evolution => &Evolution,
        genas_space::Strategy::Nsga2 => &Nsga2,
    }
}

/// Aging: the newest `size` of the population and the evaluated, oldest first.
pub(crate) fn aging(pool: &Pool<'_>, evaluated: Vec<String>) -> Vec<String> {
    let mut population = pool.population.to_vec();
    population.extend(evaluated);
    let excess = population.len().saturating_sub(pool.size.max(1));
    population.drain(..excess);
    population
}

//! Regularized evolution (Real et al. 2019): a one-gene mutation of the best of a tournament
//! drawn from the population; the population ages (the oldest leave first).

use super::{aging, Pool, Strategy};
use genas_space::Architecture;

pub struct Evolution;

impl Strategy for Evolution {
    fn propose(&self, pool: &mut Pool<'_>) -> Option<(Architecture, String)> {
        let p = pool.tournament(pool.tournament)?;
        let a = pool.space.mutate(&pool.cands[&p].architecture, pool.rng)?;
        Some((a, format!("mutation of {p}")))
    }

    fn next_population(&self, pool: &Pool<'_>, evaluated: Vec<String>) -> Vec<String> {
        aging(pool, evaluated)
    }
}

//! NSGA-II (Deb et al. 2002): parents by binary tournament, crossover then mutation; the next
//! parents are the best of parents and children by Pareto rank and crowding.

use super::{Pool, Strategy};
use crate::controller::selection_order;
use genas_space::Architecture;

pub struct Nsga2;

impl Strategy for Nsga2 {
    fn propose(&self, pool: &mut Pool<'_>) -> Option<(Architecture, String)> {
        let (p1, p2) = (pool.tournament(2)?, pool.tournament(2)?);
        let child = pool.space.crossover(
            &pool.cands[&p1].architecture,
            &pool.cands[&p2].architecture,
            pool.rng,
        )?;
        let a = pool.space.mutate(&child, pool.rng).unwrap_or(child);
        Some((a, format!("crossover of {p1} and {p2}")))
    }

    fn next_population(&self, pool: &Pool<'_>, evaluated: Vec<String>) -> Vec<String> {
        let mut merged = pool.population.to_vec();
        merged.extend(evaluated);
        let order = selection_order(&merged, pool.cands, pool.objectives);
        order.into_iter().take(pool.size.max(1)).collect()
    }
}

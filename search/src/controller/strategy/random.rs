//! Random search: every proposal a uniform draw from the space.

use super::{aging, Pool, Strategy};
use genas_space::Architecture;

pub struct Random;

impl Strategy for Random {
    fn propose(&self, pool: &mut Pool<'_>) -> Option<(Architecture, String)> {
        Some((pool.space.sample(pool.rng), "random".into()))
    }

    fn next_population(&self, pool: &Pool<'_>, evaluated: Vec<String>) -> Vec<String> {
        aging(pool, evaluated)
    }
}

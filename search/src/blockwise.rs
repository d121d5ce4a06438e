//! The exact choice of blockwise search (issue 36, item 4): one variant for every slot (a
//! layer's attention or FFN sub-block), the summed score as large as it can be while every
//! summed cost (parameters, FLOPs, memory, measured latency: the cost model's figures add up
//! over blocks) stays within its limit.
//!
//! [`front`] is exact and gives every budget's answer at once: a dynamic programme over the
//! slots that keeps, after each slot, every partial choice no other partial choice beats on
//! score and on every cost (a partial choice that is beaten can never become part of a best
//! one, since what the later slots add is the same for both), and drops those past a limit. Its
//! last set is the Pareto front of (score, costs) over the whole space, so sweeping a limit
//! reads answers off it instead of solving again, which one mixed-integer programme per budget
//! would need; that, and the costs being additive, is why this is written here rather than
//! handed to a MILP crate. [`best`] is the front's highest score. Both are checked against
//! brute force on spaces small enough to enumerate.

/// One variant of a slot: its score (larger is better; a calibrated replace-one score) and
/// its costs, one per constrained quantity, none negative.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub score: f64,
    pub cost: Vec<f64>,
}

/// A whole choice: the variant picked in each slot, the summed score and costs.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub picks: Vec<usize>,
    pub score: f64,
    pub cost: Vec<f64>,
}

/// Why the slots cannot be searched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockwiseError {
    #[error("slot {0} has no variant")]
    EmptySlot(usize),
    #[error("slot {slot}'s variant {variant} has {got} costs where the limits name {want}")]
    Costs {
        slot: usize,
        variant: usize,
        got: usize,
        want: usize,
    },
    #[error("slot {slot}'s variant {variant} has a score or cost that is not a finite number (costs must not be negative)")]
    NotFinite { slot: usize, variant: usize },
}

fn check(slots: &[Vec<Variant>], limits: &[f64]) -> Result<(), BlockwiseError> {
    for (s, vs) in slots.iter().enumerate() {
        if vs.is_empty() {
            return Err(BlockwiseError::EmptySlot(s));
        }
        for (v, x) in vs.iter().enumerate() {
            if x.cost.len() != limits.len() {
                return Err(BlockwiseError::Costs {
                    slot: s,
                    variant: v,
                    got: x.cost.len(),
                    want: limits.len(),
                });
            }
            if !x.score.is_finite() || x.cost.iter().any(|c| !c.is_finite() || *c < 0.0) {
                return Err(BlockwiseError::NotFinite {
                    slot: s,
                    variant: v,
                });
            }
        }
    }
    Ok(())
}

/// Whether `a` is at least as good as `b` everywhere: score no lower, every cost no higher.
fn covers(a: &Choice, b: &Choice) -> bool {
    a.score >= b.score && a.cost.iter().zip(&b.cost).all(|(x, y)| x <= y)
}

/// Keeps the choices no other one covers; of equal ones, the first in `set`'s order. Sorted by
/// first cost, then by score descending.
fn undominated(mut set: Vec<Choice>) -> Vec<Choice> {
    set.sort_by(|a, b| {
        let first = |c: &Choice| c.cost.first().copied().unwrap_or(0.0);
        first(a)
            .total_cmp(&first(b))
            .then(b.score.total_cmp(&a.score))
            .then_with(|| {
                // Fewer total cost first among the rest, so a covering choice comes before
                // what it covers.
                let sum = |c: &Choice| c.cost.iter().sum::<f64>();
                sum(a).total_cmp(&sum(b))
            })
    });
    let mut kept: Vec<Choice> = Vec::with_capacity(set.len());
    if set.first().is_some_and(|c| c.cost.len() <= 1) {
        // One cost: after the sort, a choice survives when it scores above every cheaper one.
        let mut best = f64::NEG_INFINITY;
        for c in set {
            if c.score > best {
                best = c.score;
                kept.push(c);
            }
        }
        return kept;
    }
    // Several costs: anything that covers a choice sorts before it.
    for c in set {
        if !kept.iter().any(|k| covers(k, &c)) {
            kept.push(c);
        }
    }
    kept
}

/// Every choice of one variant per slot within `limits` that no other such choice beats on
/// score and on every cost, by increasing first cost. Empty when nothing fits.
pub fn front(slots: &[Vec<Variant>], limits: &[f64]) -> Result<Vec<Choice>, BlockwiseError> {
    check(slots, limits)?;
    let mut set = vec![Choice {
        picks: Vec::new(),
        score: 0.0,
        cost: vec![0.0; limits.len()],
    }];
    for vs in slots {
        let mut next = Vec::with_capacity(set.len() * vs.len());
        for c in &set {
            for (v, x) in vs.iter().enumerate() {
                let cost: Vec<f64> = c.cost.iter().zip(&x.cost).map(|(a, b)| a + b).collect();
                if cost.iter().zip(limits).any(|(c, l)| c > l) {
                    continue;
                }
                let mut picks = c.picks.clone();
                picks.push(v);
                next.push(Choice {
                    picks,
                    score: c.score + x.score,
                    cost,
                });
            }
        }
        set = undominated(next);
        if set.is_empty() {
            break;
        }
    }
    Ok(set)
}

/// The choice of highest summed score within `limits` (of equal ones, the cheapest in the
/// first cost), or none when nothing fits.
pub fn best(slots: &[Vec<Variant>], limits: &[f64]) -> Result<Option<Choice>, BlockwiseError> {
    Ok(front(slots, limits)?
        .into_iter()
        .reduce(|a, b| if b.score > a.score { b } else { a }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::Rng;

    /// Every choice, by enumeration.
    fn all(slots: &[Vec<Variant>], dims: usize) -> Vec<Choice> {
        let mut out = vec![Choice {
            picks: vec![],
            score: 0.0,
            cost: vec![0.0; dims],
        }];
        for vs in slots {
            out = out
                .iter()
                .flat_map(|c| {
                    vs.iter().enumerate().map(move |(v, x)| Choice {
                        picks: [c.picks.clone(), vec![v]].concat(),
                        score: c.score + x.score,
                        cost: c.cost.iter().zip(&x.cost).map(|(a, b)| a + b).collect(),
                    })
                })
                .collect();
        }
        out
    }

    /// Slots of `n` variants each with scores and `dims` costs drawn from `rng` (costs on a
    /// coarse grid, so ties in cost happen).
    fn draw(rng: &mut Rng, slots: usize, n: usize, dims: usize) -> Vec<Vec<Variant>> {
        (0..slots)
            .map(|_| {
                (0..n)
                    .map(|_| Variant {
                        score: -(rng.index(1000) as f64) / 100.0,
                        cost: (0..dims).map(|_| rng.index(20) as f64 * 50.0).collect(),
                    })
                    .collect()
            })
            .collect()
    }

    fn within(c: &Choice, limits: &[f64]) -> bool {
        c.cost.iter().zip(limits).all(|(a, l)| a <= l)
    }

    #[test]
    fn the_best_choice_is_brute_forces_under_one_and_under_several_limits() {
        let mut rng = Rng::seed_from_u64(3);
        for case in 0..60 {
            let dims = 1 + case % 3;
            let slots = draw(&mut rng, 2 + case % 5, 2 + case % 4, dims);
            let every = all(&slots, dims);
            let limits: Vec<f64> = (0..dims).map(|_| (rng.index(60) as f64) * 50.0).collect();
            let truth = every
                .iter()
                .filter(|c| within(c, &limits))
                .map(|c| c.score)
                .fold(f64::NEG_INFINITY, f64::max);
            match best(&slots, &limits).unwrap() {
                Some(b) => {
                    assert!(within(&b, &limits), "case {case}");
                    assert!(
                        (b.score - truth).abs() < 1e-9,
                        "case {case}: {} vs {truth}",
                        b.score
                    );
                    // The picks add up to what it says.
                    let again: f64 = b
                        .picks
                        .iter()
                        .enumerate()
                        .map(|(s, &v)| slots[s][v].score)
                        .sum();
                    assert!((again - b.score).abs() < 1e-9);
                }
                None => assert_eq!(truth, f64::NEG_INFINITY, "case {case}: something fits"),
            }
        }
    }

    #[test]
    fn the_front_is_the_pareto_front_of_every_choice_and_a_sweep_reads_off_it() {
        let mut rng = Rng::seed_from_u64(11);
        for case in 0..30 {
            let dims = 1 + case % 2;
            let slots = draw(&mut rng, 3 + case % 4, 3, dims);
            let limits = vec![f64::INFINITY; dims];
            let f = front(&slots, &limits).unwrap();
            let every = all(&slots, dims);
            // Nothing in the front is beaten by any choice, and every choice is covered by one
            // member of the front.
            for m in &f {
                assert!(
                    !every
                        .iter()
                        .any(|c| covers(c, m) && (c.score > m.score || c.cost != m.cost)),
                    "case {case}: a member is beaten"
                );
            }
            for c in &every {
                assert!(
                    f.iter().any(|m| covers(m, c)),
                    "case {case}: a choice left uncovered"
                );
            }
            // Sweeping the first limit: the best within each budget is the front's best below it.
            for budget in [0.0, 100.0, 300.0, 600.0, 1e9] {
                let mut l = limits.clone();
                l[0] = budget;
                let from_front = f
                    .iter()
                    .filter(|m| within(m, &l))
                    .map(|m| m.score)
                    .fold(f64::NEG_INFINITY, f64::max);
                let solved = best(&slots, &l)
                    .unwrap()
                    .map_or(f64::NEG_INFINITY, |b| b.score);
                assert_eq!(from_front, solved, "case {case}, budget {budget}");
            }
        }
    }

    #[test]
    fn a_deep_space_is_solved_without_enumerating_it() {
        // 32 slots of 8 variants: 8^32 choices.
        let mut rng = Rng::seed_from_u64(5);
        let slots = draw(&mut rng, 32, 8, 1);
        let f = front(&slots, &[f64::INFINITY]).unwrap();
        assert!(!f.is_empty() && f.len() < 20_000, "{}", f.len());
        for w in f.windows(2) {
            assert!(w[0].cost[0] < w[1].cost[0] && w[0].score < w[1].score);
        }
        // The unconstrained best takes every slot's best variant.
        let top: f64 = slots
            .iter()
            .map(|vs| vs.iter().map(|v| v.score).fold(f64::NEG_INFINITY, f64::max))
            .sum();
        assert!((f.last().unwrap().score - top).abs() < 1e-9);
    }

    #[test]
    fn bad_slots_are_named() {
        let v = |score: f64, cost: Vec<f64>| Variant { score, cost };
        assert_eq!(
            front(&[vec![v(0.0, vec![1.0])], vec![]], &[5.0]),
            Err(BlockwiseError::EmptySlot(1))
        );
        assert!(matches!(
            front(&[vec![v(0.0, vec![1.0, 2.0])]], &[5.0]),
            Err(BlockwiseError::Costs {
                got: 2,
                want: 1,
                ..
            })
        ));
        assert!(matches!(
            front(&[vec![v(f64::NAN, vec![1.0])]], &[5.0]),
            Err(BlockwiseError::NotFinite { .. })
        ));
        assert!(matches!(
            front(&[vec![v(0.0, vec![-1.0])]], &[5.0]),
            Err(BlockwiseError::NotFinite { .. })
        ));
        // Nothing fits: no choice, no error.
        assert_eq!(best(&[vec![v(1.0, vec![10.0])]], &[5.0]).unwrap(), None);
    }
}

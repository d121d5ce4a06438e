//! The hand-designed students a practitioner builds without a search, at a parameter count:
//! the teacher's block with fewer layers (depth-only), the teacher's depth with a narrower
//! width (width-only: residual channels, heads and FFN neurons scaled together), and both
//! scaled by one factor (uniform), as Minitron's depth and width pruning shape them. Which
//! layers, channels, heads and neurons such a student keeps is the pruned initialisation's
//! business (`genas_scoring::inherit`); this module only decides the shape.
//!
//! It knows architectures and their parameter count; it must not know how they are trained.

use genas_scoring::zero_cost::params;
use genas_space::{Architecture, Attention, Layer};
use serde::{Deserialize, Serialize};

/// How far a baseline's parameter count may be from the size it stands for.
pub const TOLERANCE: f64 = 0.05;

/// A baseline's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    DepthOnly,
    WidthOnly,
    Uniform,
    /// The front of a random search of the same space at the same budget.
    Random,
}

impl Kind {
    pub const HAND: [Kind; 3] = [Kind::DepthOnly, Kind::WidthOnly, Kind::Uniform];
    pub const ALL: [Kind; 4] = [
        Kind::DepthOnly,
        Kind::WidthOnly,
        Kind::Uniform,
        Kind::Random,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::DepthOnly => "depth-only",
            Kind::WidthOnly => "width-only",
            Kind::Uniform => "uniform",
            Kind::Random => "random search",
        }
    }

    /// The part of an archive key that names it.
    pub fn key(self) -> &'static str {
        match self {
            Kind::DepthOnly => "depth-only",
            Kind::WidthOnly => "width-only",
            Kind::Uniform => "uniform",
            Kind::Random => "random",
        }
    }
}

/// One layer of the teacher scaled to residual width `d` (a share `s` of the teacher's): heads,
/// key/value heads, FFN neurons and rank by `s`, rounded, at least one; heads fewer where `d`
/// does not divide among them. None when no head count fits.
fn scale_layer(layer: &Layer, s: f64, d: u32) -> Option<Layer> {
    let scale = |n: u32| ((f64::from(n) * s).round() as u32).clamp(1, n.max(1));
    let mut out = layer.clone();
    if let Some(f) = out.ffn.as_mut() {
        f.hidden = scale(f.hidden);
        f.rank = f.rank.map(scale);
    }
    let heads = layer.attention.heads();
    if heads == 0 {
        return Some(out);
    }
    let grouped = layer.attention.kv_heads() < heads;
    let want_kv = scale(layer.attention.kv_heads());
    let (h, kv) = (1..=scale(heads)).rev().find_map(|h| {
        if layer.head_dim.is_none() && !d.is_multiple_of(h) {
            return None;
        }
        let kv = if grouped {
            (1..=want_kv.min(h))
                .rev()
                .find(|kv| h.is_multiple_of(*kv))?
        } else {
            h
        };
        Some((h, kv))
    })?;
    // Grouped attention left with as many key/value heads as heads is plain attention.
    let kv_fewer = (kv < h).then_some(kv);
    out.attention = match layer.attention {
        Attention::Full { .. } => Attention::Full { heads: h },
        Attention::Grouped { .. } => match kv_fewer {
            Some(kv_heads) => Attention::Grouped { heads: h, kv_heads },
            None => Attention::Full { heads: h },
        },
        Attention::Sliding {
            window, kv_heads, ..
        } => Attention::Sliding {
            heads: h,
            window,
            kv_heads: kv_heads.and(kv_fewer),
        },
        Attention::Linear { .. } => Attention::Linear { heads: h },
        Attention::None => Attention::None,
    };
    Some(out)
}

/// The teacher with its first `depth` layers' shapes at residual width `d` (the layers a
/// student of that depth keeps are chosen when it is initialised); None when that is not a
/// valid architecture.
pub fn scaled(teacher: &Architecture, depth: usize, d: u32) -> Option<Architecture> {
    if depth == 0 || depth > teacher.depth() || d == 0 || d > teacher.d_model {
        return None;
    }
    let s = f64::from(d) / f64::from(teacher.d_model);
    let layers = teacher.layers[..depth]
        .iter()
        .map(|l| scale_layer(l, s, d))
        .collect::<Option<Vec<Layer>>>()?;
    let arch = Architecture {
        d_model: d,
        layers,
        ..teacher.clone()
    };
    arch.validate().ok()?;
    Some(arch)
}

/// The shapes of `kind` the teacher allows, smallest first.
fn family(teacher: &Architecture, kind: Kind) -> Vec<Architecture> {
    let (depth, width) = (teacher.depth(), teacher.d_model);
    let shapes: Vec<Option<Architecture>> = match kind {
        Kind::DepthOnly => (1..depth).map(|k| scaled(teacher, k, width)).collect(),
        Kind::WidthOnly => (1..width).map(|d| scaled(teacher, depth, d)).collect(),
        Kind::Uniform => (1..width)
            .map(|d| {
                let k = (depth as f64 * f64::from(d) / f64::from(width)).round() as usize;
                scaled(teacher, k.clamp(1, depth), d)
            })
            .collect(),
        Kind::Random => Vec::new(),
    };
    shapes.into_iter().flatten().collect()
}

/// The student of `kind` whose parameter count is nearest `target` (on a log scale), or why
/// none is within `TOLERANCE` of it.
pub fn hand_designed(
    teacher: &Architecture,
    kind: Kind,
    target: f64,
) -> Result<Architecture, String> {
    let off = |a: &Architecture| (params(a) / target).ln().abs();
    let best = family(teacher, kind)
        .into_iter()
        .min_by(|a, b| off(a).total_cmp(&off(b)));
    match best {
        Some(a) if (params(&a) / target - 1.0).abs() <= TOLERANCE => Ok(a),
        Some(a) => Err(format!(
            "none within ±{:.0}% of {} params: the nearest {} student has {} ({} layers, width {})",
            TOLERANCE * 100.0,
            crate::format::thousands(target.round() as u64),
            kind.name(),
            crate::format::thousands(params(&a).round() as u64),
            a.depth(),
            a.d_model
        )),
        None => Err(format!("the teacher allows no {} student", kind.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genas_space::{Activation, Position, Sparsity};

    fn teacher(attention: Attention, rope: bool) -> Architecture {
        let layer = Layer::new(attention, 512, Activation::Gelu, None, Sparsity::Dense);
        let a = Architecture {
            vocab_size: 65,
            context: 64,
            d_model: 128,
            tie_embeddings: false,
            share_layers: 1,
            layers: vec![layer; 4],
            norm: Default::default(),
            position: if rope {
                Position::parse("rope", 10_000.0).unwrap()
            } else {
                Position::default()
            },
            norm_eps: genas_space::Float(genas_space::NORM_EPS),
        };
        a.validate().unwrap();
        a
    }

    #[test]
    fn each_kind_keeps_what_it_says_and_lands_within_the_tolerance() {
        let t = teacher(Attention::Full { heads: 4 }, false);
        let tp = params(&t);
        // Depth-only: the teacher's block, fewer layers.
        let d = hand_designed(&t, Kind::DepthOnly, tp / 2.0).unwrap();
        assert_eq!(d.depth(), 2);
        assert_eq!(d.layers[0], t.layers[0]);
        assert!((params(&d) / (tp / 2.0) - 1.0).abs() <= TOLERANCE);
        // Width-only: every layer, narrower, heads and FFN scaled with the width.
        for target in [tp / 3.0, tp / 10.0, 20_000.0] {
            let w = hand_designed(&t, Kind::WidthOnly, target).unwrap();
            assert_eq!(w.depth(), 4);
            assert!(w.d_model < 128);
            assert!((params(&w) / target - 1.0).abs() <= TOLERANCE, "{target}");
            let s = f64::from(w.d_model) / 128.0;
            assert!((f64::from(w.layers[0].ffn_hidden()) - 512.0 * s).abs() <= 0.5);
            assert_eq!(w.d_model % w.layers[0].attention.heads(), 0);
            // Uniform: depth falls with the width, by the same factor.
            let u = hand_designed(&t, Kind::Uniform, target).unwrap();
            assert!((params(&u) / target - 1.0).abs() <= TOLERANCE, "{target}");
            let s = f64::from(u.d_model) / 128.0;
            assert_eq!(u.depth(), ((4.0 * s).round() as usize).clamp(1, 4));
        }
        // A size depth-only cannot reach says how near it gets.
        let e = hand_designed(&t, Kind::DepthOnly, 20_000.0).unwrap_err();
        assert!(
            e.contains("within ±5% of 20,000 params") && e.contains("1 layers"),
            "{e}"
        );
    }

    #[test]
    fn grouped_heads_and_rope_stay_valid_when_narrowed() {
        let t = teacher(
            Attention::Grouped {
                heads: 4,
                kv_heads: 2,
            },
            true,
        );
        for target in [60_000.0, 100_000.0, 300_000.0] {
            for kind in [Kind::WidthOnly, Kind::Uniform] {
                let a = hand_designed(&t, kind, target).unwrap();
                a.validate().unwrap();
                let at = &a.layers[0].attention;
                assert_eq!(at.heads() % at.kv_heads(), 0);
                assert!(at.kv_heads() <= 2);
                assert_eq!(a.position, t.position);
            }
        }
    }
}

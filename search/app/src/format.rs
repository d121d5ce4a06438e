//! Number formatting for reports: every figure a user reads carries its unit.

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A large count: exact with separators below 10^15, scientific above.
pub fn count(n: Option<u128>, approx: f64) -> String {
    match n {
        Some(n) if n < 1_000_000_000_000_000 => thousands(n as u64),
        _ => format!("{approx:.3e}"),
    }
}

/// FLOPs with an SI prefix: 1.53 MFLOP.
pub fn flops(x: f64) -> String {
    si(x, "FLOP")
}

/// Bytes with a binary-free SI prefix (kB = 1000 B), as used for memory limits in MB.
pub fn bytes(x: f64) -> String {
    si(x, "B")
}

fn si(x: f64, unit: &str) -> String {
    let (v, p) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if p.is_empty() {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.2} {p}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(816128), "816,128");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(flops(1_656_064.0), "1.66 MFLOP");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(2_500.0), "2.50 kB");
        assert_eq!(count(Some(42), 42.0), "42");
        assert_eq!(count(None, 3.2e40), "3.200e40");
    }
}

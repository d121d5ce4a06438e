//! Number formatting, for tables and plot axes alike: every figure a user reads carries its
//! unit.

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

/// Three significant digits, trailing zeros dropped.
pub fn sig3(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A compact quantity with an SI prefix and a unit: 28.4 kB, 3.55 MB, 0 B.
pub fn short_unit(x: f64, unit: &str) -> String {
    let a = x.abs();
    let (v, p) = if a >= 1e9 {
        (x / 1e9, "G")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{} {p}{unit}", sig3(v))
}

/// A compact number: 7.1k, 77.3k, 1.23M, 12.
pub fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{}G", sig3(x / 1e9))
    } else if a >= 1e6 {
        format!("{}M", sig3(x / 1e6))
    } else if a >= 1e3 {
        format!("{}k", sig3(x / 1e3))
    } else if a >= 1.0 || a == 0.0 {
        sig3(x)
    } else {
        format!("{x:.2e}")
    }
}

/// Bytes as an axis reads them: 28.4 kB, 3.55 MB.
pub fn bytes_short(x: f64) -> String {
    short_unit(x, "B")
}

/// Milliseconds as an axis reads them: 1.2 ms, 850 µs.
pub fn ms_short(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.1} ms")
    } else {
        format!("{:.0} µs", x * 1e3)
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

    #[test]
    fn short_numbers_keep_three_significant_digits() {
        assert_eq!(short(7104.0), "7.1k");
        assert_eq!(short(999.0), "999");
        assert_eq!(short(77312.0), "77.3k");
        assert_eq!(short(1_234_567.0), "1.23M");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(0.0042), "4.20e-3");
        assert_eq!(short_unit(28_400.0, "B"), "28.4 kB");
        assert_eq!(bytes_short(3_550_000.0), "3.55 MB");
        assert_eq!(ms_short(0.85), "850 µs");
    }
}

//! Threshold ranges in the Monitoring Plugins syntax: `[@][start:][end]`.
//!
//! `10` alerts outside 0..10, `10:` below 10, `~:10` above 10, `10:20` outside 10..20, and
//! `@10:20` inside 10..20 (endpoints inclusive). An omitted start is 0, an omitted end is +∞,
//! `~` is −∞.

use std::fmt;
use std::str::FromStr;

/// One parsed range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub start: f64,
    pub end: f64,
    /// `@`: alert when the value is inside the range instead of outside.
    pub inside: bool,
}

/// Why a range does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid range {text:?}: {why} (write e.g. 10, 10:, ~:10, 10:20, @10:20)")]
pub struct RangeError {
    pub text: String,
    pub why: &'static str,
}

fn number(s: &str) -> Option<f64> {
    // The guidelines allow digits, '-', '.' only: no exponents, no inf/nan.
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return None;
    }
    s.parse().ok()
}

impl FromStr for Range {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| RangeError {
            text: text.to_owned(),
            why,
        };
        let t = text.trim();
        let (inside, t) = match t.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if t.is_empty() {
            return Err(err("empty"));
        }
        let (start, end) = match t.split_once(':') {
            None => (0.0, number(t).ok_or_else(|| err("not a number"))?),
            Some(("", "")) => return Err(err("empty")),
            Some((s, e)) => {
                let start = match s {
                    "" => 0.0,
                    "~" => f64::NEG_INFINITY,
                    s => number(s).ok_or_else(|| err("start is not a number"))?,
                };
                let end = match e {
                    "" => f64::INFINITY,
                    e => number(e).ok_or_else(|| err("end is not a number"))?,
                };
                (start, end)
            }
        };
        if start > end {
            return Err(err("start is greater than end"));
        }
        Ok(Range { start, end, inside })
    }
}

impl Range {
    /// Whether `value` should raise the alert.
    pub fn alerts(&self, value: f64) -> bool {
        let within = value >= self.start && value <= self.end;
        within == self.inside
    }
}

fn fmt_num(f: &mut fmt::Formatter<'_>, v: f64) -> fmt::Result {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        write!(f, "{}", v as i64)
    } else {
        write!(f, "{v}")
    }
}

/// Prints the range back in plugin syntax, as perfdata warn/crit fields want it.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        if self.start == 0.0 && self.end.is_finite() {
            return fmt_num(f, self.end);
        }
        if self.start == f64::NEG_INFINITY {
            f.write_str("~")?;
        } else {
            fmt_num(f, self.start)?;
        }
        f.write_str(":")?;
        if self.end.is_finite() {
            fmt_num(f, self.end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Range {
        s.parse().expect("valid range")
    }

    #[test]
    fn the_guidelines_examples() {
        // 10: < 0 or > 10
        assert!(r("10").alerts(-1.0) && r("10").alerts(10.5));
        assert!(!r("10").alerts(0.0) && !r("10").alerts(10.0));
        // 10: : < 10
        assert!(r("10:").alerts(9.9) && !r("10:").alerts(1e12));
        // ~:10 : > 10
        assert!(r("~:10").alerts(11.0) && !r("~:10").alerts(-1e9));
        // 10:20 : outside
        assert!(r("10:20").alerts(9.0) && r("10:20").alerts(21.0) && !r("10:20").alerts(15.0));
        // @10:20 : inside, inclusive
        assert!(r("@10:20").alerts(10.0) && r("@10:20").alerts(20.0) && !r("@10:20").alerts(21.0));
    }

    #[test]
    fn invalid_ranges() {
        for bad in ["", "@", "x", "20:10", "1e3", "inf", ":", "10:x", "~"] {
            assert!(bad.parse::<Range>().is_err(), "{bad:?}");
        }
        let e = "20:10".parse::<Range>().expect_err("bad");
        assert!(e.to_string().contains("start is greater than end"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["10", "10:", "~:10", "10:20", "@10:20", "0.5", "-5:-1"] {
            assert_eq!(r(s).to_string(), s);
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Range>();
        }

        #[test]
        fn evaluation_matches_the_definition(
            a in -1000i32..1000, b in -1000i32..1000, v in -2000i32..2000, inside: bool,
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            let text = format!("{}{lo}:{hi}", if inside { "@" } else { "" });
            let range: Range = text.parse().expect("valid");
            let within = lo <= v && v <= hi;
            prop_assert_eq!(range.alerts(f64::from(v)), within == inside);
            // Printing and parsing again gives the same range.
            prop_assert_eq!(range.to_string().parse::<Range>().expect("reparse"), range);
        }

        #[test]
        fn open_ranges(limit in -1000i32..1000, v in -2000i32..2000) {
            let above: Range = format!("~:{limit}").parse().expect("valid");
            prop_assert_eq!(above.alerts(f64::from(v)), v > limit);
            let below: Range = format!("{limit}:").parse().expect("valid");
            prop_assert_eq!(below.alerts(f64::from(v)), v < limit);
        }
    }
}

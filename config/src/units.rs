//! Durations (`"60s"`, `"10m"`, `"1h 30m"`) and byte sizes (`"64MiB"`, `"1GB"`, `4096`) as
//! they are written in the configuration file.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration written the humantime way: `"60s"`, `"10m"`, `"1h 30m"`, `"250ms"`, `"7days"`.
/// `"0"` and `"0s"` mean zero (which some keys read as "off").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }
    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
    /// Whole nanoseconds, saturated to `i64::MAX`.
    pub fn as_nanos_i64(self) -> i64 {
        i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX)
    }
    /// True for zero.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!(
                "duration \"{s}\" has no unit; write for example \"{t}s\", \"{t}ms\" or \"{t}m\""
            ));
        }
        humantime::parse_duration(t)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration \"{s}\": {e} (examples: \"500ms\", \"60s\", \"10m\", \"1h 30m\", \"7days\")")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"60s\", \"10m\" or \"1h 30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                if v == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "duration {v} has no unit; write it as a string, for example \"{v}s\""
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit; write it as a string, for example \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number of bytes: an integer, or a string with a unit: `"512"`, `"64KiB"`, `"64MiB"`,
/// `"1GiB"`, `"2TiB"` (powers of 1024) or `"64kB"`, `"64MB"`, `"1GB"` (powers of 1000).
/// `"0"` means zero (which some keys read as "no limit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 13] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("", 1),
];

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }
    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(t.len());
        let (num, unit) = (t[..split].replace('_', ""), t[split..].trim());
        if num.is_empty() {
            return Err(format!(
                "invalid size \"{s}\": expected a number followed by a unit (for example \"64MiB\", \"1GiB\", \"500MB\")"
            ));
        }
        let Some(&(_, mult)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "invalid size \"{s}\": unknown unit \"{unit}\"; use B, KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000)"
            ));
        };
        let bytes = if let Some((int, frac)) = num.split_once('.') {
            // Fractions are exact only in whole bytes: "1.5GiB" is fine, "1.3B" is not.
            let int: u64 = int
                .parse()
                .map_err(|_| format!("invalid size \"{s}\": bad number"))?;
            if frac.is_empty() || frac.contains('.') || frac.len() > 9 {
                return Err(format!("invalid size \"{s}\": bad number"));
            }
            let scale = 10u128.pow(frac.len() as u32);
            let frac_v: u128 = frac
                .parse()
                .map_err(|_| format!("invalid size \"{s}\": bad number"))?;
            let total = (int as u128 * scale + frac_v) * mult as u128;
            if !total.is_multiple_of(scale) {
                return Err(format!("invalid size \"{s}\": not a whole number of bytes"));
            }
            u64::try_from(total / scale).map_err(|_| format!("size \"{s}\" is too large"))?
        } else {
            let n: u64 = num
                .parse()
                .map_err(|_| format!("size \"{s}\" is too large"))?;
            n.checked_mul(mult)
                .ok_or_else(|| format!("size \"{s}\" is too large"))?
        };
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that represents the value exactly (`"64MiB"`, `"1536KiB"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [
            ("PiB", 1u64 << 50),
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 != 0 && self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64MiB\", \"1GiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(d("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(d("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(d("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert!(
            d("60").unwrap_err().contains("has no unit"),
            "{:?}",
            d("60")
        );
        assert!(d("60 parsecs").unwrap_err().contains("invalid duration"));
        assert!(d("").is_err());
        assert!(d("-5s").is_err());
        for v in ["1s", "10m", "1h 30m", "250ms", "0s", "7days"] {
            let p: HumanDuration = v.parse().unwrap();
            assert_eq!(p.to_string().parse::<HumanDuration>().unwrap(), p, "{v}");
        }
    }

    #[test]
    fn sizes() {
        let b = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(b("64MiB"), Ok(64 << 20));
        assert_eq!(b("64 MiB"), Ok(64 << 20));
        assert_eq!(b("1GB"), Ok(1_000_000_000));
        assert_eq!(b("1.5GiB"), Ok(3 << 29));
        assert_eq!(b("4096"), Ok(4096));
        assert_eq!(b("1_000B"), Ok(1000));
        assert!(b("1.3B").unwrap_err().contains("whole number"));
        assert!(b("64mb").unwrap_err().contains("unknown unit \"mb\""));
        assert!(b("MiB").unwrap_err().contains("expected a number"));
        assert!(b("99999999999PiB").unwrap_err().contains("too large"));
        assert!(b("1.2.3GiB").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1536 << 10).to_string(), "1536KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(0).to_string(), "0");
    }
}

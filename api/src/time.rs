//! Times in requests and responses: RFC 3339 (`2024-05-01T10:02:00Z`,
//! `2024-05-01T12:02:00.5+02:00`), relative (`15m` = 15 minutes before now; units `s`, `m`,
//! `h`, `d`; `now`), formatted back as RFC 3339 UTC with nanoseconds.

use tapvault_storage::{civil_from_days, days_from_civil};

const NS: i64 = 1_000_000_000;

/// Parses a time parameter; `now_ns` is the request's "now".
pub(crate) fn parse_time(s: &str, now_ns: i64) -> Result<i64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if s == "now" {
        return Ok(now_ns);
    }
    if let Some(d) = parse_relative(s) {
        let d = d?;
        return now_ns
            .checked_sub(d)
            .ok_or_else(|| format!("`{s}` reaches before the representable range"));
    }
    parse_rfc3339(s)
}

/// `<digits><unit>` as nanoseconds, `None` if it does not look relative at all.
fn parse_relative(s: &str) -> Option<Result<i64, String>> {
    let unit = s.chars().last()?;
    let mult = match unit {
        's' => NS,
        'm' => 60 * NS,
        'h' => 3600 * NS,
        'd' => 86_400 * NS,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .ok_or_else(|| format!("relative time `{s}` is too large")),
    )
}

/// A duration such as `90s`, `15m`, `1h`, `7d` (for command-line options such as the
/// maximum pcap span).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_relative(s.trim()) {
        Some(r) => r.map(|ns| std::time::Duration::from_nanos(ns as u64)),
        None => Err(format!(
            "`{s}` is not a duration (a number followed by s, m, h or d)"
        )),
    }
}

fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = |why: &str| {
        format!(
            "`{s}` is not a time: {why} (use RFC 3339 such as 2024-05-01T10:02:00Z, or a relative time such as 15m, 2h, 1d, or now)"
        )
    };
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 19 {
        return Err(bad("too short"));
    }
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    if b[16] != b':' {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo as u32) {
        return Err(bad("no such date"));
    }
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return Err(bad("fractional seconds need 1 to 9 digits"));
        }
        frac_ns = digits.parse::<i64>().map_err(|_| bad("bad fraction"))?
            * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_s = match &s[i..] {
        "Z" | "z" => 0,
        off if off.len() == 6 && (off.starts_with('+') || off.starts_with('-')) => {
            let (Some(oh), Some(om)) = (num(i + 1, 2), num(i + 4, 2)) else {
                return Err(bad("bad UTC offset"));
            };
            if b[i + 3] != b':' || oh > 23 || om > 59 {
                return Err(bad("bad UTC offset"));
            }
            let o = oh * 3600 + om * 60;
            if off.starts_with('-') { -o } else { o }
        }
        "" => return Err(bad("missing UTC offset (Z or +HH:MM)")),
        _ => return Err(bad("bad UTC offset")),
    };
    // A leap second is read as the last second of its minute.
    let sec = sec.min(59);
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(NS)
        .and_then(|n| n.checked_add(frac_ns))
        .ok_or_else(|| bad("outside the representable range (1677 to 2262)"))
}

fn days_in_month(y: i64, m: u32) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// RFC 3339 UTC with nanoseconds: `2024-05-01T10:02:00.000000000Z`.
pub(crate) fn format_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(NS);
    let frac = ns.rem_euclid(NS);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// Compact UTC for file names: `20240501T100200Z`.
pub(crate) fn format_compact(ns: i64) -> String {
    let secs = ns.div_euclid(NS);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

/// Now, ns since the epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        let t = 1_700_000_000_000_000_000;
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(t));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00", 0), Ok(t));
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z", 0), Ok(t + 500_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.000000001Z", 0), Ok(t + 1));
        assert_eq!(format_rfc3339(t + 1), "2023-11-14T22:13:20.000000001Z");
        assert_eq!(format_compact(t), "20231114T221320Z");
        for bad in [
            "2023-11-14",
            "2023-02-30T00:00:00Z",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567891Z",
            "2023-11-14T22:13:20+1:00",
            "yesterday",
            "15x",
            "-5m",
            "",
            "9999999999999999999d",
        ] {
            assert!(parse_time(bad, t).is_err(), "{bad}");
        }
        assert_eq!(parse_time("15m", t), Ok(t - 900 * NS));
        assert_eq!(parse_time("2h", t), Ok(t - 7200 * NS));
        assert_eq!(parse_time("now", t), Ok(t));
        assert_eq!(
            parse_duration("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        for ns in [0, -1, t, 9_000_000_000 * NS] {
            assert_eq!(parse_time(&format_rfc3339(ns), 0), Ok(ns));
        }
    }
}

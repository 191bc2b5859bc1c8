//! Time partitions shared by the flow and packet stores: `date=YYYY-MM-DD/hour=HH` of a UTC
//! timestamp, computed without a date library, and the writer ids that keep file names
//! unambiguous.

use std::path::{Path, PathBuf};

/// Nanoseconds in an hour.
pub(crate) const HOUR_NS: i64 = 3_600_000_000_000;
const HOURS_PER_DAY: i64 = 24;

/// Hours since the epoch (floored, so times before 1970 land in the right hour).
pub(crate) fn hour_of(ns: i64) -> i64 {
    ns.div_euclid(HOUR_NS)
}

/// `base/date=YYYY-MM-DD/hour=HH` of an hour since the epoch.
pub(crate) fn partition_dir(base: &Path, hour: i64) -> PathBuf {
    let (y, m, d) = civil_from_days(hour.div_euclid(HOURS_PER_DAY));
    let hh = hour.rem_euclid(HOURS_PER_DAY);
    base.join(format!("date={y:04}-{m:02}-{d:02}"))
        .join(format!("hour={hh:02}"))
}

/// Days since the epoch of a `date=YYYY-MM-DD` directory name.
pub(crate) fn parse_date_dir(name: &str) -> Option<i64> {
    let date = name.strip_prefix("date=")?;
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// The hour of a `hour=HH` directory name.
pub(crate) fn parse_hour_dir(name: &str) -> Option<i64> {
    let h: i64 = name.strip_prefix("hour=")?.parse().ok()?;
    (0..HOURS_PER_DAY).contains(&h).then_some(h)
}

/// Entries of `dir` whose names `parse` accepts, sorted by the parsed value then the name.
/// Other names (temporary files, indexes, other tools' markers) are ignored.
pub(crate) fn sorted_entries<T: Ord + Copy>(
    dir: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> std::io::Result<Vec<(PathBuf, T)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(v) = entry.file_name().to_str().and_then(&parse) {
            entries.push((entry.path(), v));
        }
    }
    entries.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(entries)
}

/// Whether a writer id keeps file names unambiguous (`<start-ns>-<writer-id>.<ext>`).
pub(crate) fn valid_writer_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of `days` since
/// 1970-01-01 (negative before it), in UTC: Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html>), so no date library is needed.
/// Defined for `days` up to `i64::MAX - 719_468` (the shift to the algorithm's epoch of
/// 0000-03-01 must not overflow), far beyond any nanosecond timestamp.
///
/// ```
/// assert_eq!(tapvault_storage::civil_from_days(0), (1970, 1, 1));
/// assert_eq!(tapvault_storage::civil_from_days(19_782), (2024, 2, 29));
/// ```
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d`: the inverse of
/// [`civil_from_days`] (Howard Hinnant's `days_from_civil`). `m` must be 1..=12 and `d`
/// 1..=31; a day past the month's end (February 30) is not rejected but counts on into the
/// next month, so callers that take dates from input check the day against the month first.
///
/// ```
/// assert_eq!(tapvault_storage::days_from_civil(1969, 12, 31), -1);
/// assert_eq!(tapvault_storage::days_from_civil(2023, 11, 14), 19_675);
/// ```
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2023-11-14 is day 19675; 2024-02-29 is day 19782.
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn partition_names() {
        let base = Path::new("/r/x");
        // 1700000000 s = 2023-11-14T22:13:20Z.
        let dir = partition_dir(base, hour_of(1_700_000_000_000_000_000));
        assert_eq!(dir, Path::new("/r/x/date=2023-11-14/hour=22"));
        assert_eq!(
            partition_dir(base, hour_of(-1)),
            Path::new("/r/x/date=1969-12-31/hour=23")
        );
        assert_eq!(parse_date_dir("date=2023-11-14"), Some(19_675));
        assert_eq!(parse_date_dir("date=2023-13-14"), None);
        assert_eq!(parse_hour_dir("hour=22"), Some(22));
        assert_eq!(parse_hour_dir("hour=24"), None);
        assert!(valid_writer_id("shard_3"));
        assert!(!valid_writer_id("a-b"));
        assert!(!valid_writer_id(""));
    }
}

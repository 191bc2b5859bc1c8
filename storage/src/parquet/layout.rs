//! Partition paths of the flow store (`flows/date=YYYY-MM-DD/hour=HH/`) and its file names.

use std::path::{Path, PathBuf};

pub(crate) use crate::partition::{
    HOUR_NS, hour_of, parse_date_dir, parse_hour_dir, valid_writer_id,
};

/// The directory under the store root that holds the flow partitions.
pub(crate) fn flows_dir(root: &Path) -> PathBuf {
    root.join("flows")
}

/// `flows/date=YYYY-MM-DD/hour=HH` of an hour since the epoch.
pub(crate) fn partition_dir(root: &Path, hour: i64) -> PathBuf {
    crate::partition::partition_dir(&flows_dir(root), hour)
}

/// `<start-ns>-<writer-id>.parquet`.
pub(crate) fn file_name(start_ns: i64, writer_id: &str) -> String {
    format!("{start_ns}-{writer_id}.parquet")
}

/// The `<start-ns>` of a published file name (writer ids contain no `-`).
pub(crate) fn parse_file_name(name: &str) -> Option<i64> {
    let (start, _writer) = name.strip_suffix(".parquet")?.rsplit_once('-')?;
    start.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        let root = Path::new("/r");
        let dir = partition_dir(root, hour_of(1_700_000_000_000_000_000));
        assert_eq!(dir, Path::new("/r/flows/date=2023-11-14/hour=22"));
        assert_eq!(parse_file_name("-5-w_1.parquet"), Some(-5));
        assert_eq!(parse_file_name("17-w1.parquet.tmp"), None);
    }
}

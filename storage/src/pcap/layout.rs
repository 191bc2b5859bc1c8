//! Partition paths of the packet store (`pcap/date=YYYY-MM-DD/hour=HH/`) and its file names.

use std::path::{Path, PathBuf};

pub(crate) use crate::partition::{
    HOUR_NS, hour_of, parse_date_dir, parse_hour_dir, valid_writer_id,
};

/// The directory under the store root that holds the packet partitions.
pub(crate) fn pcap_dir(root: &Path) -> PathBuf {
    root.join("pcap")
}

/// `pcap/date=YYYY-MM-DD/hour=HH` of an hour since the epoch.
pub(crate) fn partition_dir(root: &Path, hour: i64) -> PathBuf {
    crate::partition::partition_dir(&pcap_dir(root), hour)
}

/// `<start-ns>-<writer-id>.pcap.zst`.
pub(crate) fn segment_name(start_ns: i64, writer_id: &str) -> String {
    format!("{start_ns}-{writer_id}.pcap.zst")
}

/// The `<start-ns>` of a published segment name (writer ids contain no `-`).
pub(crate) fn parse_segment_name(name: &str) -> Option<i64> {
    let (start, _writer) = name.strip_suffix(".pcap.zst")?.rsplit_once('-')?;
    start.parse().ok()
}

/// The index path of a segment path: `<segment>.idx`.
pub(crate) fn index_path(segment: &Path) -> PathBuf {
    let mut s = segment.as_os_str().to_owned();
    s.push(".idx");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let root = Path::new("/r");
        let dir = partition_dir(root, hour_of(1_700_000_000_000_000_000));
        assert_eq!(dir, Path::new("/r/pcap/date=2023-11-14/hour=22"));
        assert_eq!(parse_segment_name("17-w_1.pcap.zst"), Some(17));
        assert_eq!(parse_segment_name("17-w_1.pcap.zst.idx"), None);
        assert_eq!(parse_segment_name(".w-1.pcap.zst.tmp"), None);
        assert_eq!(
            index_path(Path::new("/a/1-w.pcap.zst")),
            Path::new("/a/1-w.pcap.zst.idx")
        );
    }
}

//! [`FlowParquetWriter`] and crash recovery.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    path::{Path, PathBuf},
    sync::Arc,
};

use ::parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::{
        metadata::KeyValue,
        properties::{EnabledStatistics, WriterProperties},
    },
};

use super::{
    Error, FORMAT_VERSION, FORMAT_VERSION_KEY, Result,
    layout::{file_name, flows_dir, hour_of, partition_dir, valid_writer_id},
    schema::{flow_schema, to_batch},
};
use crate::FlowRecord;

/// Records converted to Arrow at a time (bounds the records a slice buffers as Rust values;
/// the Parquet writer accumulates the batches into row groups).
const MAX_BATCH_ROWS: usize = 8192;

/// Settings of a [`FlowParquetWriter`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriterOptions {
    /// Rows per row group (the unit a reader skips by its time statistics). Default 65 536.
    pub row_group_rows: usize,
    /// Rows after which a file is published and the next records of its hour go to a new
    /// file. Default 1 048 576.
    pub max_rows_per_file: usize,
    /// zstd level. Default 3.
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            row_group_rows: 64 * 1024,
            max_rows_per_file: 1024 * 1024,
            zstd_level: 3,
        }
    }
}

impl WriterOptions {
    /// Sets [`WriterOptions::row_group_rows`] (at least 1).
    pub fn row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    /// Sets [`WriterOptions::zstd_level`] (checked by [`FlowParquetWriter::new`]).
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level;
        self
    }

    /// Sets [`WriterOptions::max_rows_per_file`] (at least 1).
    pub fn max_rows_per_file(mut self, rows: usize) -> Self {
        self.max_rows_per_file = rows.max(1);
        self
    }
}

/// Writes flow records into hourly Parquet partitions, one file per writer per hour slice
/// (see the [module docs](crate::parquet) for the layout and the publication protocol).
///
/// Each writer (one per shard or output thread) needs an id unique among the processes
/// sharing the store root. Records go to the hour of their `last_seen_ns`; the writer keeps
/// at most one open file per hour it is writing. Call [`flush`](Self::flush) periodically
/// (the crash-loss bound is the records written since the last flush) and
/// [`close`](Self::close) at the end. Dropping a writer without closing it publishes
/// nothing: its files stay as `*.parquet.tmp` until [`recover`] removes them.
pub struct FlowParquetWriter {
    root: PathBuf,
    writer_id: String,
    options: WriterOptions,
    props: Arc<WriterProperties>,
    slices: BTreeMap<i64, Slice>,
    next_seq: u64,
    /// Set when converting a flow log: files are published as
    /// `.<writer-id>-<generation>-<start-ns>.parquet.ready` (see [`super::wal`]).
    ready_gen: Option<u64>,
}

/// One hour's buffered records and open file.
#[derive(Default)]
struct Slice {
    pending: Vec<FlowRecord>,
    file: Option<OpenFile>,
}

struct OpenFile {
    dir: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    rows: usize,
    min_first_seen: i64,
}

impl FlowParquetWriter {
    /// A writer under `root` (the store root; files go to `root/flows/...`).
    pub fn new(root: impl Into<PathBuf>, writer_id: &str, options: WriterOptions) -> Result<Self> {
        if !valid_writer_id(writer_id) {
            return Err(Error::InvalidWriterId {
                id: writer_id.to_owned(),
            });
        }
        let level =
            ZstdLevel::try_new(options.zstd_level).map_err(|_| Error::InvalidZstdLevel {
                level: options.zstd_level,
            })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
            // Page statistics include the chunk (row group) statistics readers prune with.
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                FORMAT_VERSION_KEY.to_owned(),
                FORMAT_VERSION.to_owned(),
            )]))
            .build();
        Ok(FlowParquetWriter {
            root: root.into(),
            writer_id: writer_id.to_owned(),
            options,
            props: Arc::new(props),
            slices: BTreeMap::new(),
            next_seq: 0,
            ready_gen: None,
        })
    }

    /// A writer that converts generation `generation` of a flow log: one file per hour, each
    /// published under its `.ready` name by [`flush`](Self::flush).
    pub(crate) fn for_wal(root: &Path, writer_id: &str, generation: u64) -> Result<Self> {
        let options = WriterOptions {
            max_rows_per_file: usize::MAX,
            ..WriterOptions::default()
        };
        let mut w = FlowParquetWriter::new(root, writer_id, options)?;
        w.ready_gen = Some(generation);
        Ok(w)
    }

    /// Buffers one record; may write a row group or publish a full file.
    pub fn write(&mut self, record: FlowRecord) -> Result<()> {
        let hour = hour_of(record.last_seen_ns);
        let slice = self.slices.entry(hour).or_default();
        slice.pending.push(record);
        let file_rows = slice.file.as_ref().map_or(0, |f| f.rows);
        if file_rows + slice.pending.len() >= self.options.max_rows_per_file {
            self.publish_slice(hour)?;
        } else if slice.pending.len() >= MAX_BATCH_ROWS.min(self.options.row_group_rows) {
            self.write_pending(hour)?;
        }
        Ok(())
    }

    /// Writes every record of `records`.
    pub fn write_all(&mut self, records: impl IntoIterator<Item = FlowRecord>) -> Result<()> {
        records.into_iter().try_for_each(|r| self.write(r))
    }

    /// Publishes every open file (and the records buffered for it); returns their paths.
    pub fn flush(&mut self) -> Result<Vec<PathBuf>> {
        let hours: Vec<i64> = self.slices.keys().copied().collect();
        let mut published = Vec::new();
        for hour in hours {
            published.extend(self.publish_slice(hour)?);
        }
        self.slices.clear();
        Ok(published)
    }

    /// Flushes and ends the writer; returns the paths published by this last flush.
    pub fn close(mut self) -> Result<Vec<PathBuf>> {
        self.flush()
    }

    /// Writes an hour's buffered records to its file, opening the file if needed.
    fn write_pending(&mut self, hour: i64) -> Result<()> {
        let Some(slice) = self.slices.get_mut(&hour) else {
            return Ok(());
        };
        if slice.pending.is_empty() {
            return Ok(());
        }
        let file = match &mut slice.file {
            Some(file) => file,
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                slice.file.insert(open_file(
                    &self.root,
                    hour,
                    &self.writer_id,
                    seq,
                    &self.props,
                )?)
            }
        };
        let batch = to_batch(&slice.pending).map_err(|source| Error::Arrow {
            path: file.tmp.clone(),
            source,
        })?;
        file.writer
            .write(&batch)
            .map_err(|source| Error::WriteParquet {
                path: file.tmp.clone(),
                source,
            })?;
        file.rows += slice.pending.len();
        let min = slice.pending.iter().map(|r| r.first_seen_ns).min();
        file.min_first_seen = file.min_first_seen.min(min.unwrap_or(i64::MAX));
        slice.pending.clear();
        Ok(())
    }

    /// Writes an hour's buffered records and publishes its file.
    fn publish_slice(&mut self, hour: i64) -> Result<Option<PathBuf>> {
        self.write_pending(hour)?;
        let Some(file) = self.slices.get_mut(&hour).and_then(|s| s.file.take()) else {
            return Ok(None);
        };
        publish(file, &self.writer_id, self.ready_gen).map(Some)
    }
}

fn open_file(
    root: &Path,
    hour: i64,
    writer_id: &str,
    seq: u64,
    props: &Arc<WriterProperties>,
) -> Result<OpenFile> {
    let dir = partition_dir(root, hour);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        // Make the new directory entries durable: the hour, date and flows directories.
        let mut d = dir.as_path();
        for _ in 0..3 {
            let Some(parent) = d.parent() else { break };
            sync_dir(parent)?;
            d = parent;
        }
    }
    let tmp = dir.join(format!(".{writer_id}-{seq}.parquet.tmp"));
    let f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    let writer =
        ArrowWriter::try_new(f, flow_schema(), Some((**props).clone())).map_err(|source| {
            Error::WriteParquet {
                path: tmp.clone(),
                source,
            }
        })?;
    Ok(OpenFile {
        dir,
        tmp,
        writer,
        rows: 0,
        min_first_seen: i64::MAX,
    })
}

/// Finishes the file, syncs it, renames it to its final name and syncs the directory.
fn publish(mut file: OpenFile, writer_id: &str, ready_gen: Option<u64>) -> Result<PathBuf> {
    let wp = |source| Error::WriteParquet {
        path: file.tmp.clone(),
        source,
    };
    file.writer.finish().map_err(wp)?;
    file.writer
        .inner()
        .sync_all()
        .map_err(Error::io("sync", &file.tmp))?;
    drop(file.writer);
    // The name carries the smallest first_seen_ns; should this writer already have published
    // a file with that start, an earlier start keeps the name a lower bound and unique.
    let mut start = file.min_first_seen;
    if let Some(generation) = ready_gen {
        let path = file
            .dir
            .join(super::wal::ready_name(writer_id, generation, start));
        fs::rename(&file.tmp, &path).map_err(Error::io("rename", &file.tmp))?;
        sync_dir(&file.dir)?;
        return Ok(path);
    }
    let mut path = file.dir.join(file_name(start, writer_id));
    while path.exists() {
        start -= 1;
        path = file.dir.join(file_name(start, writer_id));
    }
    fs::rename(&file.tmp, &path).map_err(Error::io("rename", &file.tmp))?;
    sync_dir(&file.dir)?;
    Ok(path)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync directory", dir))
}

/// Removes the `*.parquet.tmp` files under `root/flows` left by a crash, and returns their
/// paths (for the caller to log). Run it before starting writers.
///
/// Such a file is incomplete by construction (it is renamed only once complete and synced),
/// so nothing readable is thrown away: what a crash loses is the records written since the
/// writer's last [`flush`](FlowParquetWriter::flush).
pub fn recover(root: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let flows = flows_dir(root);
    if flows.is_dir() {
        recover_dir(&flows, 0, &mut removed)?;
    }
    Ok(removed)
}

fn recover_dir(dir: &Path, depth: u32, removed: &mut Vec<PathBuf>) -> Result<()> {
    let before = removed.len();
    for entry in fs::read_dir(dir).map_err(Error::io("read directory", dir))? {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(Error::io("stat", &path))?;
        if ty.is_dir() && depth < 2 {
            recover_dir(&path, depth + 1, removed)?;
        } else if ty.is_file()
            && entry
                .file_name()
                .to_string_lossy()
                .ends_with(".parquet.tmp")
        {
            fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            removed.push(path);
        }
    }
    if removed.len() > before {
        sync_dir(dir)?;
    }
    Ok(())
}

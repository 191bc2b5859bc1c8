//! Reading flow records of a time range, pruning partitions, files and row groups.

use std::{fs::File, path::Path};

use ::parquet::{
    arrow::arrow_reader::ParquetRecordBatchReaderBuilder,
    file::{metadata::RowGroupMetaData, statistics::Statistics},
};

use super::{
    Error, FORMAT_VERSION, FORMAT_VERSION_KEY, Result,
    layout::{HOUR_NS, flows_dir, parse_date_dir, parse_file_name, parse_hour_dir},
    schema::from_batch,
};
use crate::{FlowRecord, partition::sorted_entries};

/// What a read opened and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStats {
    /// Files opened.
    pub files_read: usize,
    /// Files skipped by their name (they start after the range).
    pub files_skipped: usize,
    /// Row groups decoded.
    pub row_groups_read: usize,
    /// Row groups skipped by their time statistics.
    pub row_groups_skipped: usize,
}

/// The flow records that overlap `[from_ns, to_ns]` (both inclusive: a record overlaps when
/// `first_seen_ns <= to_ns` and `last_seen_ns >= from_ns`), in file order.
pub fn read_flows(root: &Path, from_ns: i64, to_ns: i64) -> Result<Vec<FlowRecord>> {
    read_flows_with_stats(root, from_ns, to_ns).map(|(records, _)| records)
}

/// [`read_flows`], with counts of what was read and skipped.
///
/// Partitions whose hour ends before `from_ns` are not listed (a record lives in the hour of
/// its `last_seen_ns`). Later partitions are listed but a file is opened only if its name's
/// start (its smallest `first_seen_ns`) is not after `to_ns`, and within a file a row group
/// is decoded only if its `first_seen_ns` minimum and `last_seen_ns` maximum allow an
/// overlap.
pub fn read_flows_with_stats(
    root: &Path,
    from_ns: i64,
    to_ns: i64,
) -> Result<(Vec<FlowRecord>, ReadStats)> {
    let mut stats = ReadStats::default();
    let mut out = Vec::new();
    for file_path in candidate_files(root, from_ns, to_ns, &mut stats)? {
        read_file(&file_path, from_ns, to_ns, &mut out, &mut stats)?;
    }
    Ok((out, stats))
}

/// Opens a flow file, checks its format version, and picks the row groups whose time
/// statistics can overlap `[from_ns, to_ns]` (counted in `stats`); `None` when none can.
fn open_pruned(
    path: &Path,
    from_ns: i64,
    to_ns: i64,
    stats: &mut ReadStats,
) -> Result<Option<(ParquetRecordBatchReaderBuilder<File>, Vec<usize>)>> {
    let rp = |source| Error::ReadParquet {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(Error::io("open", path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(rp)?;
    stats.files_read += 1;
    let metadata = builder.metadata().clone();
    let version = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == FORMAT_VERSION_KEY))
        .and_then(|kv| kv.value.clone());
    if let Some(version) = version.filter(|v| v != FORMAT_VERSION) {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            version,
        });
    }
    let mut row_groups = Vec::new();
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        let may_overlap = int64_stat(rg, "first_seen_ns", true).is_none_or(|min| min <= to_ns)
            && int64_stat(rg, "last_seen_ns", false).is_none_or(|max| max >= from_ns);
        if may_overlap {
            row_groups.push(i);
        } else {
            stats.row_groups_skipped += 1;
        }
    }
    stats.row_groups_read += row_groups.len();
    Ok((!row_groups.is_empty()).then_some((builder, row_groups)))
}

fn read_file(
    path: &Path,
    from_ns: i64,
    to_ns: i64,
    out: &mut Vec<FlowRecord>,
    stats: &mut ReadStats,
) -> Result<()> {
    let rp = |source| Error::ReadParquet {
        path: path.to_owned(),
        source,
    };
    let Some((builder, row_groups)) = open_pruned(path, from_ns, to_ns, stats)? else {
        return Ok(());
    };
    let reader = builder.with_row_groups(row_groups).build().map_err(rp)?;
    for batch in reader {
        let batch = batch.map_err(|source| Error::Arrow {
            path: path.to_owned(),
            source,
        })?;
        out.extend(
            from_batch(&batch, path)?
                .into_iter()
                .filter(|r| r.first_seen_ns <= to_ns && r.last_seen_ns >= from_ns),
        );
    }
    Ok(())
}

/// A row group's minimum (`min == true`) or maximum of an INT64 (timestamp) column, when its
/// statistics hold an exact one.
fn int64_stat(rg: &RowGroupMetaData, column: &str, min: bool) -> Option<i64> {
    let chunk = rg
        .columns()
        .iter()
        .find(|c| c.column_descr().name() == column)?;
    match chunk.statistics()? {
        Statistics::Int64(s) if min && s.min_is_exact() => s.min_opt().copied(),
        Statistics::Int64(s) if !min && s.max_is_exact() => s.max_opt().copied(),
        _ => None,
    }
}

/// The function of a [`FlowPredicate`]: one answer per row of the batch.
pub type PredicateFn = std::sync::Arc<
    dyn Fn(
            &arrow_array::RecordBatch,
        ) -> std::result::Result<arrow_array::BooleanArray, arrow_schema::ArrowError>
        + Send
        + Sync,
>;

/// A row predicate pushed down into [`read_flows_filtered`]: it sees only the named columns
/// of rows that overlap the time range, and answers, per row, whether to decode the whole
/// record. Rows it rejects are never turned into [`FlowRecord`]s.
#[derive(Clone)]
pub struct FlowPredicate {
    /// The columns the predicate reads (names of [`FlowRecord`] fields).
    pub columns: Vec<String>,
    /// Called with a batch holding `columns` (in schema order, named as the fields); a null
    /// or `false` entry drops the row. It may be called concurrently only if the caller
    /// shares it; [`read_flows_filtered`] calls it from one thread.
    pub eval: PredicateFn,
}

impl std::fmt::Debug for FlowPredicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowPredicate")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// [`read_flows_with_stats`] with the time test and an optional [`FlowPredicate`] pushed into
/// the Parquet decoder: the pruning by partition, file name and row-group statistics is the
/// same, then within a row group the two time columns are decoded first, then the
/// predicate's columns of the rows that overlap, and only the rows both accept are decoded
/// whole. `keep_going` is asked before each file; when it answers `false` the read stops
/// with [`Error::Interrupted`].
pub fn read_flows_filtered(
    root: &Path,
    from_ns: i64,
    to_ns: i64,
    predicate: Option<&FlowPredicate>,
    keep_going: &dyn Fn() -> bool,
) -> Result<(Vec<FlowRecord>, ReadStats)> {
    let mut stats = ReadStats::default();
    let mut out = Vec::new();
    for file_path in candidate_files(root, from_ns, to_ns, &mut stats)? {
        if !keep_going() {
            return Err(Error::Interrupted);
        }
        read_file_filtered(&file_path, from_ns, to_ns, predicate, &mut out, &mut stats)?;
    }
    Ok((out, stats))
}

/// The published flow files that may hold records overlapping `[from_ns, to_ns]`, pruned by
/// partition and file name as [`read_flows_with_stats`] does.
fn candidate_files(
    root: &Path,
    from_ns: i64,
    to_ns: i64,
    stats: &mut ReadStats,
) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    if from_ns > to_ns {
        return Ok(files);
    }
    let from_hour = i128::from(from_ns).div_euclid(i128::from(HOUR_NS));
    let flows = flows_dir(root);
    if !flows.is_dir() {
        return Ok(files);
    }
    for (date_path, day) in sorted_entries(&flows, parse_date_dir)
        .map_err(Error::io("read directory", flows.as_path()))?
    {
        if i128::from(day) * 24 + 23 < from_hour {
            continue;
        }
        for (hour_path, hh) in sorted_entries(&date_path, parse_hour_dir)
            .map_err(Error::io("read directory", date_path.as_path()))?
        {
            if i128::from(day) * 24 + i128::from(hh) < from_hour {
                continue;
            }
            for (file_path, start) in sorted_entries(&hour_path, parse_file_name)
                .map_err(Error::io("read directory", hour_path.as_path()))?
            {
                if start > to_ns {
                    stats.files_skipped += 1;
                    continue;
                }
                files.push(file_path);
            }
        }
    }
    Ok(files)
}

fn read_file_filtered(
    path: &Path,
    from_ns: i64,
    to_ns: i64,
    predicate: Option<&FlowPredicate>,
    out: &mut Vec<FlowRecord>,
    stats: &mut ReadStats,
) -> Result<()> {
    use ::parquet::arrow::{
        ProjectionMask,
        arrow_reader::{ArrowPredicateFn, RowFilter},
    };
    use arrow_array::{Array, BooleanArray, types::TimestampNanosecondType};

    let rp = |source| Error::ReadParquet {
        path: path.to_owned(),
        source,
    };
    let Some((builder, row_groups)) = open_pruned(path, from_ns, to_ns, stats)? else {
        return Ok(());
    };
    let metadata = builder.metadata().clone();
    let schema = metadata.file_metadata().schema_descr();
    let time_mask = ProjectionMask::columns(schema, ["first_seen_ns", "last_seen_ns"]);
    let time = ArrowPredicateFn::new(time_mask, move |batch: arrow_array::RecordBatch| {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| {
                    c.as_any()
                        .downcast_ref::<arrow_array::PrimitiveArray<TimestampNanosecondType>>()
                })
                .cloned()
                .ok_or_else(|| {
                    arrow_schema::ArrowError::SchemaError(format!("column `{name}` is missing"))
                })
        };
        let (first, last) = (col("first_seen_ns")?, col("last_seen_ns")?);
        Ok(BooleanArray::from_iter((0..batch.num_rows()).map(|i| {
            Some(
                first.is_valid(i)
                    && last.is_valid(i)
                    && first.value(i) <= to_ns
                    && last.value(i) >= from_ns,
            )
        })))
    });
    let mut predicates: Vec<Box<dyn ::parquet::arrow::arrow_reader::ArrowPredicate>> =
        vec![Box::new(time)];
    if let Some(p) = predicate {
        let mask = ProjectionMask::columns(schema, p.columns.iter().map(String::as_str));
        let eval = p.eval.clone();
        predicates.push(Box::new(ArrowPredicateFn::new(
            mask,
            move |batch: arrow_array::RecordBatch| eval(&batch),
        )));
    }
    let reader = builder
        .with_row_groups(row_groups)
        .with_row_filter(RowFilter::new(predicates))
        .build()
        .map_err(rp)?;
    for batch in reader {
        let batch = batch.map_err(|source| Error::Arrow {
            path: path.to_owned(),
            source,
        })?;
        out.extend(from_batch(&batch, path)?);
    }
    Ok(())
}

//! `tapvault storage-soak` (hidden): writes deterministic packets and flow records through
//! the live storage services at a fixed rate, and records what the stores acknowledged as
//! durable, for the SIGKILL crash test (`tests/storage.rs`).
//!
//! Packet `seq` of round `round` is [`soak_packet`]`(round, seq)`, stamped with the wall
//! clock when written; every tenth packet also produces a flow record whose `flow_id` is
//! `format!("{round:04x}{seq:012x}")` and whose times are the packet's. The ack file gets
//! `start <ns>` when writing begins and, after every tick that advanced it,
//! `ack <packets durable> <records durable> <ns>`.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use tapvault_storage::{
    FlowRecord, FlowStore, PacketStore, SegmentOptions, StoreOptions, recover_store,
};

#[derive(clap::Args)]
pub(crate) struct SoakArgs {
    /// Store root.
    #[arg(long)]
    dir: PathBuf,
    /// Packets per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Round number (goes into every packet and record).
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Where to append what was acknowledged as durable.
    #[arg(long)]
    ack: Option<PathBuf>,
    /// Segment roll interval, seconds.
    #[arg(long, default_value_t = 60.0)]
    segment_secs: f64,
    /// Flow log rotation (Parquet publication) interval, seconds.
    #[arg(long, default_value_t = 60.0)]
    publish_secs: f64,
    /// Only run recovery, then exit.
    #[arg(long)]
    recover_only: bool,
}

/// Every tenth packet has a flow record.
pub(crate) const RECORD_EVERY: u64 = 10;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of packet `seq` of round `round`: round (u32 LE), seq (u64 LE), then 40 to
/// 1439 pseudo-random bytes determined by both.
pub(crate) fn soak_packet(round: u32, seq: u64) -> Vec<u8> {
    let key = (u64::from(round) << 40) ^ seq;
    let len = 40 + (mix(key) % 1400) as usize;
    let mut out = Vec::with_capacity(12 + len + 8);
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let mut x = key;
    while out.len() < 12 + len {
        x = mix(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(12 + len);
    out
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub(crate) fn soak(a: SoakArgs) -> Result<()> {
    let rec = recover_store(&a.dir).with_context(|| format!("recovery of {}", a.dir.display()))?;
    for line in rec.log_lines() {
        eprintln!("tapvault: {line}");
    }
    if a.recover_only {
        return Ok(());
    }
    let mut ack = match &a.ack {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => None,
    };
    let opts = StoreOptions::default()
        .flow_publish_interval_ns((a.publish_secs * 1e9) as i64)
        .retry_interval_ns(200_000_000);
    let seg = SegmentOptions::default().segment_max_span_ns((a.segment_secs * 1e9) as i64);
    let writer = format!("soak{}", a.round);
    let mut packets = PacketStore::open(&a.dir, &writer, seg, opts.clone())?;
    let mut flows = FlowStore::open(&a.dir, &writer, opts)?;
    let start = now_ns();
    if let Some(f) = &mut ack {
        writeln!(f, "start {start}")?;
    }
    let end = start + (a.seconds * 1e9) as i64;
    let period = 1_000_000_000 / a.rate.max(1) as i64;
    let tick_every = 20_000_000;
    let mut next_tick = start;
    let mut last_ack = (0, 0);
    let mut last_ts = 0;
    let mut seq = 0u64;
    loop {
        let now = now_ns();
        if now >= end {
            break;
        }
        // Write every packet due by now.
        while start + seq as i64 * period <= now {
            let ts = now.max(last_ts + 1);
            last_ts = ts;
            let data = soak_packet(a.round, seq);
            packets.write(ts, data.len() as u32 + 4, &data, seq % 50);
            if seq.is_multiple_of(RECORD_EVERY) {
                flows.write(&FlowRecord {
                    flow_id: format!("{:04x}{seq:012x}", a.round),
                    first_seen_ns: ts,
                    last_seen_ns: ts,
                    proto: "tcp".into(),
                    ip_version: 4,
                    client_ip: "192.0.2.1".into(),
                    server_ip: "192.0.2.2".into(),
                    packets_c2s: seq,
                    ..FlowRecord::default()
                });
            }
            seq += 1;
        }
        if now >= next_tick {
            next_tick = now + tick_every;
            packets.tick(now);
            flows.tick(now);
            let p = packets.current_stats().packets_durable;
            let r = flows.stats().snapshot().records_durable;
            if (p, r) != last_ack
                && let Some(f) = &mut ack
            {
                last_ack = (p, r);
                writeln!(f, "ack {p} {r} {}", now_ns())?;
            }
        }
        let wake = (start + seq as i64 * period).min(next_tick);
        let wait = wake - now_ns();
        if wait > 0 {
            std::thread::sleep(Duration::from_nanos(wait as u64));
        }
    }
    let p = packets.close();
    let f = flows.close();
    eprintln!(
        "tapvault: soak wrote {seq} packets ({} durable), {} records ({} published)",
        p.packets_durable, f.records_accepted, f.records_published
    );
    Ok(())
}

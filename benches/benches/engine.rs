//! Throughput of tapvault's packet path on a synthetic, in-memory packet set.
//!
//! Run (about 80 s on 2 cores, most of it measuring):
//!
//! ```text
//! cargo bench -p tapvault-benches --bench engine
//! cargo bench -p tapvault-benches --bench engine -- --quick     # smoke test
//! ```
//!
//! Sample result (2026-11-22, dataplane at d3f9272, 2-core VM "Intel(R) Xeon(R) Processor",
//! Linux 6.18, Rust 1.95, quiet machine; criterion's middle estimate):
//!
//! ```text
//! synthetic set: 133189 frames, 115.1 MB, tcp 130189, udp 3000, ipv6 18838, vlan 5442
//! engine/decode ethernet - synthetic   20.5 ms   6.49 Melem/s   (154 ns/packet)
//! engine/decode+desc - synthetic       29.2 ms   4.56 Melem/s   (219 ns/packet)
//! engine/decode+flow - synthetic       58.4 ms   2.28 Melem/s   (439 ns/packet)
//! ```
//!
//! The packet set comes from `tapvault_benches::generate` (seeded, so identical every run):
//! 2,000 TCP connections (5 % bulk) with handshake, data both ways, delayed ACKs, ~1 % loss
//! shown as dup ACKs with SACK and fast retransmissions, FIN or RST; 1,500 DNS pairs over UDP;
//! 15 % IPv6, 5 % VLAN-tagged (some QinQ); full-size frames in one buffer in capture order.
//!
//! * `decode ethernet - synthetic`: `decode::decode` alone.
//! * `decode+desc - synthetic`: plus `PacketDesc::from_packet` (what the reader thread does
//!   when shards run on their own threads).
//! * `decode+flow - synthetic`: plus `FlowTable::process` in a single shard with a no-op sink,
//!   and the final `flush` (every flow becomes a record), as `tapvault analyze --shards 1`.

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tapvault_benches::{PacketSet, SynthConfig, generate};
use tapvault_config::FlowConfig;
use tapvault_dataplane::{
    decode::{self, Decoded, LinkType, Transport},
    flow::{
        desc::PacketDesc,
        table::{FlowTable, Sink},
    },
};
use tapvault_storage::FlowRecord;

/// A sink that counts and drops records (the table still builds every record).
struct NoopSink {
    records: u64,
}

impl Sink for NoopSink {
    fn record(&mut self, rec: FlowRecord) {
        self.records += 1;
        black_box(&rec);
    }
}

fn packet_set() -> PacketSet {
    let set = generate(&SynthConfig::default());
    // Every frame must decode to TCP or UDP, or the benchmark measures error paths.
    let (mut tcp, mut udp, mut v6, mut vlan) = (0usize, 0usize, 0usize, 0usize);
    for (_, f) in set.iter() {
        match decode::decode(LinkType::ETHERNET, f) {
            Decoded::Ip(p) => {
                match p.transport {
                    Transport::Tcp(_) => tcp += 1,
                    Transport::Udp(_) => udp += 1,
                    t => panic!("unexpected transport {t:?}"),
                }
                v6 += usize::from(p.ip.version == 6);
                vlan += usize::from(p.vlan[0].is_some());
            }
            d => panic!("synthetic frame did not decode: {d:?}"),
        }
    }
    eprintln!(
        "synthetic set: {} frames, {:.1} MB, tcp {tcp}, udp {udp}, ipv6 {v6}, vlan {vlan}; \
         sizes: Decoded {} B, PacketDesc {} B",
        set.len(),
        set.bytes() as f64 / 1e6,
        std::mem::size_of::<Decoded<'_>>(),
        std::mem::size_of::<PacketDesc>(),
    );
    set
}

fn benches(c: &mut Criterion) {
    let set = packet_set();
    let n = set.len() as u64;

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("decode ethernet - synthetic", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for (_, f) in set.iter() {
                if let Decoded::Ip(p) = decode::decode(LinkType::ETHERNET, black_box(f)) {
                    ok += u64::from(p.ip.proto);
                }
            }
            black_box(ok)
        })
    });

    g.bench_function("decode+desc - synthetic", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for (i, (ts, f)) in set.iter().enumerate() {
                if let Decoded::Ip(p) = decode::decode(LinkType::ETHERNET, black_box(f)) {
                    let d = PacketDesc::from_packet(i as u64 + 1, ts, f.len() as u32, &p);
                    acc ^= black_box(&d).hash;
                }
            }
            black_box(acc)
        })
    });

    let cfg = FlowConfig {
        shards: 1,
        ..FlowConfig::default()
    };
    g.bench_function("decode+flow - synthetic", |b| {
        b.iter_batched_ref(
            || (FlowTable::new(&cfg, cfg.max_flows), NoopSink { records: 0 }),
            |(table, sink)| {
                for (i, (ts, f)) in set.iter().enumerate() {
                    if let Decoded::Ip(p) = decode::decode(LinkType::ETHERNET, black_box(f)) {
                        let d = PacketDesc::from_packet(i as u64 + 1, ts, f.len() as u32, &p);
                        table.process(&d, sink);
                    }
                }
                table.flush(sink);
                black_box(sink.records)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);

//! Tests for the capture-file reader. Captures are built byte by byte here, written to
//! temporary files and read back; compressed variants are made with flate2 and zstd.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CaptureFile, Compression, Error, Format};
use crate::decode::{LinkType, linktype_name};

/// A link type no decoder supports (LINKTYPE_USER0).
const USER0: u32 = 147;

/// A temporary file, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(bytes: &[u8]) -> Tmp {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tapvault-source-{}-{n}.cap", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        Tmp(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A frame copied out of the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    ts_ns: i64,
    orig_len: u32,
    linktype: u32,
    interface: u32,
    data: Vec<u8>,
}

fn frame(ts_ns: i64, orig_len: u32, linktype: u32, interface: u32, data: &[u8]) -> Frame {
    Frame {
        ts_ns,
        orig_len,
        linktype,
        interface,
        data: data.to_vec(),
    }
}

/// Everything a file yields.
#[derive(Debug)]
struct Read {
    frames: Vec<Frame>,
    truncated: bool,
    skipped: u64,
    format: Format,
    compression: Compression,
    /// The error that ended the read, if any.
    error: Option<Error>,
}

fn read_path(path: &Path) -> Result<Read, Error> {
    let mut cap = CaptureFile::open(path)?;
    let mut frames = Vec::new();
    let mut error = None;
    loop {
        match cap.next_frame() {
            Ok(Some(f)) => frames.push(Frame {
                ts_ns: f.ts_ns,
                orig_len: f.orig_len,
                linktype: f.linktype.0,
                interface: f.interface,
                data: f.data.to_vec(),
            }),
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_none() {
        // The end is sticky.
        assert!(cap.next_frame().unwrap().is_none());
        let (done, total) = cap.progress();
        assert_eq!(done, total, "progress at the end");
    }
    Ok(Read {
        frames,
        truncated: cap.truncated_tail(),
        skipped: cap.skipped_records(),
        format: cap.format(),
        compression: cap.compression(),
        error,
    })
}

fn read_bytes(bytes: &[u8]) -> Result<Read, Error> {
    let tmp = Tmp::new(bytes);
    read_path(tmp.path())
}

/// Reads a file that must be read to the end without error.
fn read_ok(bytes: &[u8]) -> Read {
    let r = read_bytes(bytes).unwrap();
    if let Some(e) = &r.error {
        panic!("unexpected error after {} frames: {e}", r.frames.len());
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Builders.

/// A classic pcap file; records are also remembered with their end offsets.
struct PcapBuilder {
    be: bool,
    nanos: bool,
    bytes: Vec<u8>,
    /// End offset of every record.
    ends: Vec<usize>,
    frames: Vec<Frame>,
    linktype: u32,
}

impl PcapBuilder {
    fn new(be: bool, nanos: bool, linktype_field: u32) -> PcapBuilder {
        let mut b = PcapBuilder {
            be,
            nanos,
            bytes: Vec::new(),
            ends: Vec::new(),
            frames: Vec::new(),
            linktype: linktype_field & 0xFFFF,
        };
        b.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        b.u16(2);
        b.u16(4);
        b.u32(0); // thiszone
        b.u32(0); // sigfigs
        b.u32(65535); // snaplen
        b.u32(linktype_field);
        b
    }

    fn u16(&mut self, v: u16) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }

    fn record(&mut self, sec: u32, frac: u32, data: &[u8], orig_len: u32) -> &mut Self {
        self.u32(sec);
        self.u32(frac);
        self.u32(data.len() as u32);
        self.u32(orig_len);
        self.bytes.extend_from_slice(data);
        self.ends.push(self.bytes.len());
        let scale = if self.nanos { 1 } else { 1000 };
        self.frames.push(frame(
            i64::from(sec) * 1_000_000_000 + i64::from(frac) * scale,
            orig_len,
            self.linktype,
            0,
            data,
        ));
        self
    }
}

fn sample_pcap(be: bool, nanos: bool) -> PcapBuilder {
    let mut b = PcapBuilder::new(be, nanos, 1);
    let frac = if nanos { 123_456_789 } else { 123_456 };
    b.record(1_700_000_000, frac, &[0xAA; 60], 60)
        .record(1_700_000_001, 0, &[1, 2, 3, 4, 5, 6, 7], 1514)
        .record(1_700_000_002, frac, &[], 0)
        .record(u32::MAX, frac, &[0x55; 33], 33);
    b
}

/// A pcapng file.
struct NgBuilder {
    be: bool,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// An IDB option.
enum Opt<'a> {
    TsResol(u8),
    TsOffset(i64),
    Other(u16, &'a [u8]),
}

impl NgBuilder {
    fn new(be: bool) -> NgBuilder {
        let mut b = NgBuilder {
            be,
            bytes: Vec::new(),
            ends: Vec::new(),
        };
        b.shb(be, &[]);
        b
    }

    fn e16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn e32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// Appends a block with the given body (padded to 4 bytes).
    fn block(&mut self, block_type: u32, body: &[u8]) -> &mut Self {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (body.len() + 12) as u32;
        let (t, l) = (self.e32(block_type), self.e32(len));
        self.bytes.extend_from_slice(&t);
        self.bytes.extend_from_slice(&l);
        self.bytes.extend_from_slice(&body);
        self.bytes.extend_from_slice(&l);
        self.ends.push(self.bytes.len());
        self
    }

    /// Starts a section in the given byte order.
    fn shb(&mut self, be: bool, options: &[u8]) -> &mut Self {
        self.be = be;
        let mut body = Vec::new();
        body.extend_from_slice(&self.e32(0x1A2B_3C4D));
        body.extend_from_slice(&self.e16(1));
        body.extend_from_slice(&self.e16(0));
        body.extend_from_slice(&(-1i64).to_le_bytes());
        body.extend_from_slice(options);
        self.block(0x0A0D_0D0A, &body)
    }

    fn options(&self, opts: &[Opt<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for opt in opts {
            let (code, value) = match opt {
                Opt::TsResol(v) => (9, vec![*v]),
                Opt::TsOffset(v) => (
                    14,
                    if self.be {
                        v.to_be_bytes()
                    } else {
                        v.to_le_bytes()
                    }
                    .to_vec(),
                ),
                Opt::Other(code, v) => (*code, v.to_vec()),
            };
            out.extend_from_slice(&self.e16(code));
            out.extend_from_slice(&self.e16(value.len() as u16));
            out.extend_from_slice(&value);
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
        out.extend_from_slice(&[0; 4]); // opt_endofopt
        out
    }

    fn idb(&mut self, linktype: u16, snaplen: u32, opts: &[Opt<'_>]) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.e16(linktype));
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.e32(snaplen));
        body.extend_from_slice(&self.options(opts));
        self.block(1, &body)
    }

    fn epb_raw(
        &mut self,
        iface: u32,
        units: u64,
        caplen: u32,
        data: &[u8],
        orig: u32,
    ) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.e32(iface));
        body.extend_from_slice(&self.e32((units >> 32) as u32));
        body.extend_from_slice(&self.e32(units as u32));
        body.extend_from_slice(&self.e32(caplen));
        body.extend_from_slice(&self.e32(orig));
        body.extend_from_slice(data);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        // An option (comment) after the data.
        body.extend_from_slice(&self.e16(1));
        body.extend_from_slice(&self.e16(3));
        body.extend_from_slice(b"hi\0\0");
        body.extend_from_slice(&[0; 4]);
        self.block(6, &body)
    }

    fn epb(&mut self, iface: u32, units: u64, data: &[u8], orig: u32) -> &mut Self {
        self.epb_raw(iface, units, data.len() as u32, data, orig)
    }

    fn pb(&mut self, iface: u16, units: u64, data: &[u8], orig: u32) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.e16(iface));
        body.extend_from_slice(&self.e16(0)); // drops
        body.extend_from_slice(&self.e32((units >> 32) as u32));
        body.extend_from_slice(&self.e32(units as u32));
        body.extend_from_slice(&self.e32(data.len() as u32));
        body.extend_from_slice(&self.e32(orig));
        body.extend_from_slice(data);
        self.block(2, &body)
    }

    fn spb(&mut self, orig: u32, data: &[u8]) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.e32(orig));
        body.extend_from_slice(data);
        self.block(3, &body)
    }
}

/// A pcapng file with the interesting features, and what it must yield.
fn sample_pcapng(be: bool) -> (NgBuilder, Vec<Frame>) {
    let mut b = NgBuilder::new(be);
    let base = 1_700_000_000u64;
    b.idb(1, 0, &[Opt::Other(2, b"eth0")]) // interface 0: Ethernet, microseconds
        .idb(113, 128, &[Opt::TsResol(9), Opt::TsOffset(100)]) // 1: Linux SLL, ns, +100 s
        .idb(101, 0, &[Opt::TsResol(0x80 | 20)]) // 2: raw IP, 2^-20 s
        .block(4, &[0; 8]) // name resolution block: skipped
        .epb(0, base * 1_000_000 + 250_000, &[0xEE; 14], 14)
        .epb(1, base * 1_000_000_000 + 7, &[0x11; 5], 300)
        .block(5, &[0; 20]) // interface statistics block: skipped
        .epb(2, (base << 20) | (1 << 19), &[0x45, 0, 0, 20], 20)
        .spb(200, &[0x22; 152]) // interface 0, snaplen 0: caplen = min(orig, body) = 152
        .block(0x0000_0BAD, &[1, 2, 3, 4]) // custom block: skipped
        .block(0x8000_0001, &[]) // local-use block: skipped
        .pb(1, base * 1_000_000_000 + 9, &[0x33; 3], 3);
    let frames = vec![
        frame(1_700_000_000_250_000_000, 14, 1, 0, &[0xEE; 14]),
        frame(1_700_000_100_000_000_007, 300, 113, 1, &[0x11; 5]),
        frame(1_700_000_000_500_000_000, 20, 101, 2, &[0x45, 0, 0, 20]),
        frame(1_700_000_000_500_000_000, 200, 1, 0, &[0x22; 152]),
        frame(1_700_000_100_000_000_009, 3, 113, 1, &[0x33; 3]),
    ];
    (b, frames)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

fn skippable_frame(magic_low: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x50 | magic_low, 0x2a, 0x4d, 0x18];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

// ---------------------------------------------------------------------------------------------
// pcap.

#[test]
fn pcap_both_byte_orders_micro_and_nano() {
    for be in [false, true] {
        for nanos in [false, true] {
            let b = sample_pcap(be, nanos);
            let r = read_ok(&b.bytes);
            assert_eq!(r.frames, b.frames, "be={be} nanos={nanos}");
            assert!(!r.truncated);
            assert_eq!(r.skipped, 0);
            assert_eq!(r.format, if nanos { Format::PcapNs } else { Format::Pcap });
            assert_eq!(r.compression, Compression::None);
        }
    }
    let b = sample_pcap(false, true);
    assert_eq!(b.frames[0].ts_ns, 1_700_000_000_123_456_789);
    assert_eq!(
        b.frames[3].ts_ns,
        i64::from(u32::MAX) * 1_000_000_000 + 123_456_789
    );
}

#[test]
fn pcap_fcs_bits_in_linktype_field() {
    // Bit 26 "FCS length present" and an FCS length of 1 (16-bit words) in bits 28-31.
    let mut b = PcapBuilder::new(false, false, 0x1400_0001);
    b.record(1, 2, &[9; 10], 10);
    let r = read_ok(&b.bytes);
    assert_eq!(r.frames, b.frames);
    assert_eq!(r.frames[0].linktype, 1);
}

#[test]
fn pcap_modified_kuznetzov() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0xa1b2_cd34u32.to_le_bytes());
    bytes.extend_from_slice(&[2, 0, 4, 0]);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..3u32 {
        bytes.extend_from_slice(&(100 + i).to_le_bytes());
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(&4u32.to_le_bytes());
        bytes.extend_from_slice(&64u32.to_le_bytes());
        bytes.extend_from_slice(&[7, 0, 0, 0, 8, 0, 0, 0]); // ifindex, protocol, pkt_type, pad
        bytes.extend_from_slice(&[i as u8; 4]);
    }
    let r = read_ok(&bytes);
    assert_eq!(r.format, Format::Pcap);
    assert_eq!(r.frames.len(), 3);
    assert_eq!(r.frames[2], frame(102_000_005_000, 64, 1, 0, &[2; 4]));
}

#[test]
fn pcap_oversized_caplen_is_corrupt() {
    let mut b = sample_pcap(false, false);
    let at = b.bytes.len();
    b.u32(1);
    b.u32(0);
    b.u32(300_000); // > 262144 and > snaplen 65535
    b.u32(300_000);
    b.bytes.extend_from_slice(&[0; 64]);
    let r = read_bytes(&b.bytes).unwrap();
    assert_eq!(r.frames, b.frames);
    match r.error {
        Some(Error::Corrupt { offset, what, .. }) => {
            assert_eq!(offset, at as u64);
            assert!(what.contains("300000"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A caplen up to Wireshark's 262144 is fine even above the snaplen.
    let mut b = PcapBuilder::new(true, false, 1);
    b.record(1, 1, &vec![3; 262_144], 262_144);
    assert_eq!(read_ok(&b.bytes).frames, b.frames);
}

#[test]
fn pcap_unsupported_linktype_is_an_open_error() {
    let mut b = PcapBuilder::new(false, false, USER0);
    b.record(1, 1, &[1], 1);
    let tmp = Tmp::new(&b.bytes);
    let err = CaptureFile::open(tmp.path()).unwrap_err();
    let name = linktype_name(LinkType(USER0));
    match &err {
        Error::UnsupportedLinkType {
            name: n, interface, ..
        } => {
            assert_eq!(n, &name);
            assert_eq!(*interface, 0);
        }
        other => panic!("expected UnsupportedLinkType, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("unsupported link type"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// pcapng.

#[test]
fn pcapng_both_byte_orders() {
    for be in [false, true] {
        let (b, frames) = sample_pcapng(be);
        let r = read_ok(&b.bytes);
        assert_eq!(r.frames, frames, "be={be}");
        assert_eq!(r.format, Format::Pcapng);
        assert!(!r.truncated);
        assert_eq!(r.skipped, 0);
    }
}

#[test]
fn pcapng_multiple_sections_restart_interfaces() {
    let (mut b, mut frames) = sample_pcapng(false);
    // A second section in the other byte order with a long SHB comment: its interface 0 is
    // the fourth interface of the file.
    let comment = NgBuilder::new(true).options(&[Opt::Other(1, &[b'x'; 1001])]);
    b.shb(true, &comment)
        .idb(229, 0, &[Opt::TsResol(3)])
        .epb(0, 42, &[0x60; 40], 40)
        // A simple packet block takes the last timestamp and the snaplen.
        .idb(1, 16, &[])
        .spb(100, &[0x77; 100]);
    frames.push(frame(42_000_000, 40, 229, 3, &[0x60; 40]));
    // SPB is on interface 0 of the section (IPv6, snaplen 0): min(orig 100, body 100).
    frames.push(frame(42_000_000, 100, 229, 3, &[0x77; 100]));
    // A third section, little-endian again; an SPB on an interface with snaplen 16.
    b.shb(false, &[]).idb(1, 16, &[]).spb(100, &[0x78; 100]);
    frames.push(frame(42_000_000, 100, 1, 5, &[0x78; 16]));
    let r = read_ok(&b.bytes);
    assert_eq!(r.frames, frames);
}

#[test]
fn pcapng_timestamp_extremes_do_not_overflow() {
    let mut b = NgBuilder::new(false);
    b.idb(1, 0, &[Opt::TsResol(0), Opt::TsOffset(i64::MAX)])
        .idb(1, 0, &[Opt::TsResol(0x80 | 127), Opt::TsOffset(i64::MIN)])
        .idb(1, 0, &[Opt::TsResol(120)])
        .epb(0, u64::MAX, &[1], 1)
        .epb(1, u64::MAX, &[2], 1)
        .epb(2, u64::MAX, &[3], 1);
    let r = read_ok(&b.bytes);
    let ts: Vec<i64> = r.frames.iter().map(|f| f.ts_ns).collect();
    assert_eq!(ts, vec![i64::MAX, i64::MIN, 0]);
}

#[test]
fn pcapng_caplen_beyond_block_is_skipped_and_counted() {
    let mut b = NgBuilder::new(false);
    b.idb(1, 0, &[])
        .epb_raw(0, 1, 1000, &[0; 8], 1000)
        .block(6, &[0; 8]) // too short for the fixed fields
        .epb(0, 2, &[5; 6], 6);
    let r = read_ok(&b.bytes);
    assert_eq!(r.frames, vec![frame(2000, 6, 1, 0, &[5; 6])]);
    assert_eq!(r.skipped, 2);
}

#[test]
fn pcapng_undefined_interface_is_corrupt() {
    let mut b = NgBuilder::new(false);
    b.idb(1, 0, &[]).epb(0, 1, &[1], 1);
    let at = b.bytes.len();
    b.epb(1, 1, &[1], 1);
    let r = read_bytes(&b.bytes).unwrap();
    assert_eq!(r.frames.len(), 1);
    match r.error {
        Some(Error::Corrupt { offset, what, .. }) => {
            assert_eq!(offset, at as u64);
            assert!(what.contains("interface 1"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A simple packet block without any interface.
    let mut b = NgBuilder::new(true);
    b.spb(4, &[1, 2, 3, 4]);
    assert!(matches!(
        read_bytes(&b.bytes).unwrap().error,
        Some(Error::Corrupt { .. })
    ));
}

#[test]
fn pcapng_bad_block_lengths_are_corrupt() {
    let good = {
        let mut b = NgBuilder::new(false);
        b.idb(1, 0, &[]).epb(0, 1, &[1], 1);
        b
    };
    let end = good.bytes.len();
    let epb_at = good.ends[1];
    // (what, offset, bytes written there)
    let cases = [
        ("not a multiple of 4", epb_at + 4, &[33u8][..]),
        ("below 12", epb_at + 4, &[8]),
        ("trailer mismatch", end - 4, &[99]),
        ("huge", epb_at + 4, &[0xf0; 4]),
    ];
    for (name, at, patch) in cases {
        let mut bytes = good.bytes.clone();
        bytes[at..at + patch.len()].copy_from_slice(patch);
        let r = read_bytes(&bytes).unwrap();
        assert!(r.frames.is_empty(), "{name}");
        match r.error {
            Some(Error::Corrupt { offset, .. }) => assert_eq!(offset, epb_at as u64, "{name}"),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn pcapng_unsupported_linktype_only_matters_when_used() {
    let mut b = NgBuilder::new(false);
    // Many interfaces, some of them unsupported, packets only on a supported one.
    for i in 0..40u16 {
        b.idb(if i % 3 == 0 { 1 } else { USER0 as u16 }, 0, &[]);
    }
    b.epb(30, 1, &[1; 20], 20).epb(30, 2, &[2; 20], 20);
    let r = read_ok(&b.bytes);
    assert_eq!(r.frames.len(), 2);
    assert!(
        r.frames
            .iter()
            .all(|f| f.interface == 30 && f.linktype == 1)
    );

    // A packet on an unsupported interface: an error naming it; the next call continues.
    b.epb(4, 3, &[3; 20], 20).epb(0, 4, &[4; 20], 20);
    let tmp = Tmp::new(&b.bytes);
    let mut cap = CaptureFile::open(tmp.path()).unwrap();
    assert!(cap.next_frame().unwrap().is_some());
    assert!(cap.next_frame().unwrap().is_some());
    let err = cap.next_frame().unwrap_err();
    let name = linktype_name(LinkType(USER0));
    match &err {
        Error::UnsupportedLinkType {
            name: n, interface, ..
        } => {
            assert_eq!(n, &name);
            assert_eq!(*interface, 4);
        }
        other => panic!("expected UnsupportedLinkType, got {other:?}"),
    }
    assert!(err.to_string().contains("interface 4"), "{err}");
    let f = cap.next_frame().unwrap().unwrap();
    assert_eq!((f.interface, f.data), (0, &[4u8; 20][..]));
    assert!(cap.next_frame().unwrap().is_none());
}

#[test]
fn pcapng_bad_version_and_byte_order() {
    let mut b = NgBuilder::new(false);
    b.idb(1, 0, &[]).epb(0, 1, &[1], 1);
    let mut bytes = b.bytes.clone();
    bytes[12] = 2; // major version
    assert!(matches!(
        read_bytes(&bytes).unwrap().error,
        Some(Error::Corrupt { offset: 0, .. })
    ));
    let mut bytes = b.bytes.clone();
    bytes[8] = 0; // byte-order magic
    assert!(matches!(
        read_bytes(&bytes),
        Err(Error::UnknownFormat { .. })
    ));
    // A second section with a broken byte-order magic.
    let mut b2 = NgBuilder::new(false);
    b2.idb(1, 0, &[]).epb(0, 1, &[1], 1);
    let at = b2.bytes.len();
    b2.shb(false, &[]);
    b2.bytes[at + 8] = 0;
    let r = read_bytes(&b2.bytes).unwrap();
    assert_eq!(r.frames.len(), 1);
    assert!(matches!(r.error, Some(Error::Corrupt { offset, .. }) if offset == at as u64));
}

// ---------------------------------------------------------------------------------------------
// Compression.

#[test]
fn gzip_pcap_and_pcapng() {
    let p = sample_pcap(true, false);
    let r = read_ok(&gzip(&p.bytes));
    assert_eq!(r.compression, Compression::Gzip);
    assert_eq!(r.frames, p.frames);
    assert!(!r.truncated);

    let (n, frames) = sample_pcapng(false);
    let r = read_ok(&gzip(&n.bytes));
    assert_eq!(r.frames, frames);
    assert_eq!(r.format, Format::Pcapng);

    // Several gzip members (as `cat a.gz b.gz` makes) are one stream.
    let cut = p.ends[1];
    let mut two = gzip(&p.bytes[..cut]);
    two.extend_from_slice(&gzip(&p.bytes[cut..]));
    assert_eq!(read_ok(&two).frames, p.frames);
}

#[test]
fn zstd_multi_frame_with_skippable_frames() {
    let (n, frames) = sample_pcapng(true);
    let r = read_ok(&zstd(&n.bytes));
    assert_eq!(r.compression, Compression::Zstd);
    assert_eq!(r.frames, frames);

    // Two frames split in the middle of a block, a skippable frame in between and a trailing
    // one (as the seekable format's seek table).
    let cut = n.ends[4] + 10;
    let mut file = zstd(&n.bytes[..cut]);
    file.extend_from_slice(&skippable_frame(0xE, b"between"));
    file.extend_from_slice(&zstd(&n.bytes[cut..]));
    file.extend_from_slice(&skippable_frame(
        0xE,
        &[0xB1, 0xEA, 0x92, 0x8F, 0, 0, 0, 0, 0],
    ));
    let r = read_ok(&file);
    assert_eq!(r.frames, frames);
    assert!(!r.truncated);

    // A file may even start with a skippable frame.
    let p = sample_pcap(false, true);
    let mut file = skippable_frame(0, &[1, 2, 3]);
    file.extend_from_slice(&zstd(&p.bytes));
    let r = read_ok(&file);
    assert_eq!(r.compression, Compression::Zstd);
    assert_eq!(r.frames, p.frames);
}

#[test]
fn large_records_grow_the_stream_window() {
    // Records larger than the 1 MiB window, in pcapng (EPB of 3 MiB) through zstd and gzip.
    let mut b = NgBuilder::new(false);
    b.idb(1, 0, &[]);
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..3u64 {
        b.epb(0, i, &big, big.len() as u32)
            .epb(0, i, &[1; 100], 100);
    }
    for bytes in [zstd(&b.bytes), gzip(&b.bytes), b.bytes.clone()] {
        let r = read_ok(&bytes);
        assert_eq!(r.frames.len(), 6);
        assert!(r.frames.iter().step_by(2).all(|f| f.data == big));
    }
    // Many small records crossing the window boundary.
    let mut p = PcapBuilder::new(false, false, 1);
    for i in 0..20_000u32 {
        p.record(i, i % 1_000_000, &vec![i as u8; (i % 200) as usize], 200);
    }
    let r = read_ok(&zstd(&p.bytes));
    assert_eq!(r.frames, p.frames);
}

#[test]
fn corrupt_compressed_stream_is_an_error() {
    // Poorly compressible records, so that the middle of the compressed file is several
    // zstd blocks (128 KiB) in.
    let mut p = PcapBuilder::new(false, false, 1);
    let mut x = 0x2545_F491u32;
    for i in 0..5000u32 {
        let data: Vec<u8> = (0..100)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        p.record(i, 0, &data, 100);
    }
    // Random data is stored in raw zstd blocks: only the frame checksum notices damage.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(&p.bytes).unwrap();
    let zstd_checked = enc.finish().unwrap();
    for (name, mut bytes) in [("gzip", gzip(&p.bytes)), ("zstd", zstd_checked)] {
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0x5A;
        }
        let r = read_bytes(&bytes).unwrap();
        // Frames before the damage are delivered (gzip may also deliver garbage before its CRC
        // check fails: the format cannot tell earlier).
        assert!(r.frames.len() > 1000, "{name}: {}", r.frames.len());
        assert_eq!(r.frames[..1000], p.frames[..1000], "{name}");
        assert!(
            matches!(r.error, Some(Error::Corrupt { .. })),
            "{name}: expected Corrupt, got {:?}",
            r.error
        );
    }
    // Trailing garbage after a complete zstd frame.
    let mut bytes = zstd(&p.bytes);
    bytes.extend_from_slice(b"garbage!");
    let r = read_bytes(&bytes).unwrap();
    assert_eq!(r.frames.len(), 5000);
    assert!(
        matches!(r.error, Some(Error::Corrupt { .. })) || r.truncated,
        "{:?}",
        r.error
    );
}

// ---------------------------------------------------------------------------------------------
// Truncation, garbage, empty files.

/// Checks a read of `bytes[..cut]` against the full file's frames.
fn check_cut(
    what: &str,
    result: Result<Read, Error>,
    full: &[Frame],
    expect: Option<(usize, bool)>,
) {
    match result {
        Err(Error::UnknownFormat { .. } | Error::Empty { .. }) => {
            assert!(expect.is_none_or(|(n, _)| n == 0), "{what}: open failed")
        }
        Err(e) => panic!("{what}: unexpected open error {e}"),
        Ok(r) => {
            if let Some(e) = &r.error {
                panic!("{what}: error after {} frames: {e}", r.frames.len());
            }
            assert_eq!(r.frames[..], full[..r.frames.len()], "{what}: not a prefix");
            if let Some((n, truncated)) = expect {
                assert_eq!(r.frames.len(), n, "{what}: frame count");
                assert_eq!(r.truncated, truncated, "{what}: truncated_tail");
            } else {
                assert!(
                    r.truncated || r.frames.len() == full.len(),
                    "{what}: lost frames without truncated_tail"
                );
            }
        }
    }
}

/// Expected (frames, truncated) for a cut of an uncompressed file with records ending at `ends`
/// after a header of `header` bytes.
fn expect_cut(cut: usize, header: usize, ends: &[usize]) -> Option<(usize, bool)> {
    if cut < header {
        return None;
    }
    let n = ends.iter().filter(|&&e| e <= cut).count();
    let at_boundary = cut == header || ends.contains(&cut);
    Some((n, !at_boundary))
}

#[test]
fn truncation_at_every_offset_pcap() {
    for (be, nanos) in [(false, false), (true, true)] {
        let b = sample_pcap(be, nanos);
        for cut in 0..b.bytes.len() {
            let expect = expect_cut(cut, 24, &b.ends);
            check_cut(
                &format!("pcap cut {cut}"),
                read_bytes(&b.bytes[..cut]),
                &b.frames,
                expect,
            );
        }
    }
}

#[test]
fn truncation_at_every_offset_pcapng() {
    let (b, frames) = sample_pcapng(false);
    // Frame i comes from block packet_blocks[i] (block 0 is the section header).
    let packet_blocks = [5usize, 6, 8, 9, 12];
    assert_eq!(b.ends.len(), 13);
    for cut in 0..b.bytes.len() {
        let what = format!("pcapng cut {cut}");
        let result = read_bytes(&b.bytes[..cut]);
        if cut < b.ends[0] {
            assert!(
                matches!(
                    result,
                    Err(Error::UnknownFormat { .. } | Error::Empty { .. })
                ),
                "{what}"
            );
            continue;
        }
        let n = packet_blocks.iter().filter(|&&i| b.ends[i] <= cut).count();
        let truncated = !b.ends.contains(&cut);
        check_cut(&what, result, &frames, Some((n, truncated)));
    }
}

#[test]
fn truncation_at_every_offset_compressed() {
    let (b, frames) = sample_pcapng(false);
    let p = sample_pcap(false, false);
    let mut zstd_multi = zstd(&b.bytes[..200]);
    zstd_multi.extend_from_slice(&zstd(&b.bytes[200..]));
    zstd_multi.extend_from_slice(&skippable_frame(0xE, &[0; 9]));
    let files = [
        ("gzip pcapng", gzip(&b.bytes), &frames),
        ("zstd pcapng", zstd(&b.bytes), &frames),
        ("zstd multi", zstd_multi, &frames),
        ("gzip pcap", gzip(&p.bytes), &p.frames),
        ("zstd pcap", zstd(&p.bytes), &p.frames),
    ];
    for (name, bytes, full) in files {
        for cut in 0..bytes.len() {
            let what = format!("{name} cut {cut}/{}", bytes.len());
            check_cut(&what, read_bytes(&bytes[..cut]), full, None);
        }
    }
}

#[test]
fn empty_short_and_garbage_files() {
    assert!(matches!(read_bytes(&[]), Err(Error::Empty { .. })));
    for short in [
        &[0xd4][..],
        &[0xd4, 0xc3, 0xb2],
        &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0],
    ] {
        assert!(matches!(
            read_bytes(short),
            Err(Error::UnknownFormat { .. })
        ));
    }
    let text = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".repeat(10);
    let mut noise = Vec::new();
    let mut x = 0x1234_5678u32;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let mut gzip_bad_body = gzip(&text)[..10].to_vec();
    gzip_bad_body.extend_from_slice(&[0xff; 64]);
    let mut zstd_bad_body = vec![0x28, 0xb5, 0x2f, 0xfd];
    zstd_bad_body.extend_from_slice(&[0xff; 64]);
    for (name, bytes) in [
        ("text", text.clone()),
        ("noise", noise.clone()),
        ("gzip text", gzip(&text)),
        ("zstd noise", zstd(&noise)),
        ("gzip bad body", gzip_bad_body),
        ("zstd bad body", zstd_bad_body),
        ("gzip magic only", vec![0x1f, 0x8b]),
        ("zstd tiny", zstd(&[0xd4, 0xc3])),
    ] {
        match read_bytes(&bytes) {
            Err(Error::UnknownFormat { magic, .. }) => assert!(magic.len() <= 16, "{name}"),
            other => panic!("{name}: expected UnknownFormat, got {other:?}"),
        }
    }
    // Compressed emptiness is an empty capture.
    assert!(matches!(read_bytes(&gzip(&[])), Err(Error::Empty { .. })));
    assert!(matches!(read_bytes(&zstd(&[])), Err(Error::Empty { .. })));
    // The error text shows the first bytes.
    let err = read_bytes(b"hello world").unwrap_err().to_string();
    assert!(err.contains("not a pcap or pcapng capture"), "{err}");
    assert!(err.contains("68, 65, 6c"), "{err}");
    // Missing file.
    let err = CaptureFile::open(Path::new("/nonexistent/tapvault.pcap")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn random_mutations_never_panic() {
    // A cheap in-test fuzzer: flip bytes of valid files (plain and compressed).
    let (n, _) = sample_pcapng(true);
    let p = sample_pcap(false, true);
    let mut x = 0x9E37_79B9u32;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for base in [
        n.bytes.clone(),
        p.bytes.clone(),
        gzip(&n.bytes),
        zstd(&p.bytes),
    ] {
        for _ in 0..300 {
            let mut bytes = base.clone();
            for _ in 0..1 + rand() % 4 {
                let at = rand() as usize % bytes.len();
                bytes[at] = rand() as u8;
            }
            let _ = read_bytes(&bytes);
        }
    }
}

#[test]
fn capture_file_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<CaptureFile>();
}

#[test]
fn progress_counts_compressed_bytes() {
    let mut p = PcapBuilder::new(false, false, 1);
    for i in 0..5000u32 {
        p.record(i, 0, &[i as u8; 100], 100);
    }
    let bytes = gzip(&p.bytes);
    let tmp = Tmp::new(&bytes);
    let mut cap = CaptureFile::open(tmp.path()).unwrap();
    assert_eq!(cap.progress().1, bytes.len() as u64);
    while cap.next_frame().unwrap().is_some() {}
    assert_eq!(cap.progress(), (bytes.len() as u64, bytes.len() as u64));

    let tmp = Tmp::new(&p.bytes);
    let mut cap = CaptureFile::open(tmp.path()).unwrap();
    cap.next_frame().unwrap();
    assert_eq!(cap.progress(), (24 + 116, p.bytes.len() as u64));
}

// ---------------------------------------------------------------------------------------------
// The shared test captures.

/// Converts tshark's "seconds.nanoseconds" epoch string to nanoseconds.
fn parse_epoch(s: &str) -> Option<i64> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut frac = frac.to_string();
    while frac.len() < 9 {
        frac.push('0');
    }
    Some(sec.parse::<i64>().ok()? * 1_000_000_000 + frac.get(..9)?.parse::<i64>().ok()?)
}

#[test]
fn shared_test_captures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/captures");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipped: {} does not exist", dir.display());
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    paths.sort();
    let mut checked = 0;
    for path in paths {
        let expected_path = PathBuf::from(format!("{}.expected.json", path.display()));
        let Ok(text) = std::fs::read_to_string(&expected_path) else {
            continue;
        };
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let packets = expected["capture_info"]["packets"].as_u64().unwrap();
        let r = read_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some(e) = &r.error {
            panic!("{}: {e}", path.display());
        }
        assert_eq!(r.frames.len() as u64, packets, "{}", path.display());
        assert!(!r.truncated, "{}", path.display());
        assert_eq!(r.skipped, 0, "{}", path.display());
        // Every stream's first and last frame (1-based frame numbers) has the timestamp
        // tshark printed.
        for stream in expected["streams"].as_array().into_iter().flatten() {
            for (num, ts) in [("first_frame", "first_ts"), ("last_frame", "last_ts")] {
                let (Some(num), Some(ts)) = (stream[num].as_u64(), stream[ts].as_str()) else {
                    continue;
                };
                let frame = &r.frames[num as usize - 1];
                assert_eq!(
                    Some(frame.ts_ns),
                    parse_epoch(ts),
                    "{}: frame {num}",
                    path.display()
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 0);
    println!("checked {checked} captures");
}

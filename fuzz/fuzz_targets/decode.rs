//! Fuzzes the packet decoder: the first input byte picks a link type, the rest is the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapvault_dataplane::decode::{
    Decoded, LinkType, MAX_SACK_BLOCKS, Transport, decode, linktype_name, supports_linktype,
};

/// Every link type the decoder supports, plus one it does not.
const LINKTYPES: [LinkType; 14] = [
    LinkType::ETHERNET,
    LinkType::NULL,
    LinkType::FDDI,
    LinkType::RAW_12,
    LinkType::RAW_14,
    LinkType::RAW,
    LinkType::IEEE802_11,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::NFLOG,
    LinkType::LINUX_SLL2,
    LinkType(147),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let lt = LINKTYPES[usize::from(selector) % LINKTYPES.len()];
    let decoded = decode(lt, frame);
    match decoded {
        Decoded::Ip(p) => {
            assert!(supports_linktype(lt));
            assert!(p.ip.version == 4 || p.ip.version == 6);
            // The payload borrows from the frame.
            let start = frame.as_ptr() as usize;
            let ps = p.payload.as_ptr() as usize;
            assert!(
                p.payload.is_empty()
                    || (ps >= start && ps + p.payload.len() <= start + frame.len())
            );
            match p.transport {
                Transport::Tcp(t) => {
                    assert!((20..=60).contains(&t.header_len));
                    assert!(p.payload.len() <= t.seg_len as usize);
                    assert!(usize::from(t.options.sack_count) <= MAX_SACK_BLOCKS);
                }
                Transport::Udp(u) => assert!(p.payload.len() <= u.payload_len as usize),
                _ => {}
            }
        }
        Decoded::UnsupportedLinkType(l) => {
            assert_eq!(l, lt);
            assert!(!supports_linktype(lt));
            assert!(linktype_name(lt).contains("unknown"));
        }
        Decoded::Malformed(m) => assert!(!m.as_str().is_empty()),
        Decoded::NotIp(_) => {}
    }
});

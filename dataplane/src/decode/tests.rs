//! Decoder tests: hand-built frames for every link type and encapsulation, robustness against
//! truncation, bogus lengths and random bytes, and (when present) the shared test captures.

use super::*;

// ---------------------------------------------------------------------------------------------
// Frame builders.

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x00, 0x11, 0x22, 0x33, 0x44, 0x55],
        &[0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb],
        &be16(ethertype),
        payload,
    ])
}

fn ipv4_full(proto: u8, payload: &[u8], frag: u16, opts: &[u8], src: [u8; 4]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let ihl = 5 + opts.len() / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    cat(&[
        &[0x40 | ihl as u8, 0],
        &be16(total),
        &be16(0x1234),
        &be16(frag),
        &[64, proto, 0, 0],
        &src,
        &DST4,
        opts,
        payload,
    ])
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_full(proto, payload, 0, &[], SRC4)
}

fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
    cat(&[
        &[0x60, 0, 0, 0],
        &be16(payload.len() as u16),
        &[nh, 64],
        &SRC6,
        &DST6,
        payload,
    ])
}

fn tcp(sport: u16, dport: u16, flags: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let doff = (5 + opts.len() / 4) as u8;
    cat(&[
        &be16(sport),
        &be16(dport),
        &1000u32.to_be_bytes(),
        &2000u32.to_be_bytes(),
        &[doff << 4 | (flags >> 8) as u8, flags as u8],
        &be16(65535),
        &[0, 0, 0, 0],
        opts,
        payload,
    ])
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    cat(&[
        &be16(sport),
        &be16(dport),
        &be16(8 + payload.len() as u16),
        &[0, 0],
        payload,
    ])
}

/// IPv4/TCP 10.0.0.1:1234 -> 10.0.0.2:80, SYN|ACK, payload "hello".
fn tcp4() -> Vec<u8> {
    ipv4(
        6,
        &tcp(1234, 80, tcp_flags::SYN | tcp_flags::ACK, &[], b"hello"),
    )
}

/// IPv6/TCP [2001:db8::1]:1234 -> [2001:db8::2]:80, ACK, payload "hello".
fn tcp6() -> Vec<u8> {
    ipv6(6, &tcp(1234, 80, tcp_flags::ACK, &[], b"hello"))
}

fn vlan_tag(vid: u16, ethertype: u16) -> Vec<u8> {
    cat(&[&be16(vid), &be16(ethertype)])
}

fn gre(flags: u16, proto: u16, optional: &[u8], payload: &[u8]) -> Vec<u8> {
    cat(&[&be16(flags), &be16(proto), optional, payload])
}

/// An 802.11 QoS data frame (ToDS) with LLC/SNAP carrying `ethertype`.
fn wlan_qos(fc1: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let four = fc1 & 0x03 == 0x03;
    let mut f = vec![0x88, fc1 as u8, 0, 0];
    f.extend_from_slice(&[1; 6]);
    f.extend_from_slice(&[2; 6]);
    f.extend_from_slice(&[3; 6]);
    f.extend_from_slice(&[0x10, 0x00]); // sequence control: fragment 0
    if four {
        f.extend_from_slice(&[4; 6]);
    }
    f.extend_from_slice(&[0x00, 0x00]); // QoS control
    if fc1 & 0x80 != 0 {
        f.extend_from_slice(&[0, 0, 0, 0]); // HT control
    }
    f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0]);
    f.extend_from_slice(&be16(ethertype));
    f.extend_from_slice(payload);
    f
}

/// Decodes a copy of `f` that lives for the rest of the test process (keeps tests terse).
fn dl(lt: LinkType, f: &[u8]) -> Decoded<'static> {
    decode(lt, f.to_vec().leak())
}

fn pkt(d: Decoded<'_>) -> Packet<'_> {
    match d {
        Decoded::Ip(p) => p,
        other => panic!("expected an IP packet, got {other:?}"),
    }
}

fn tcp_of(p: &Packet<'_>) -> TcpHeader {
    match p.transport {
        Transport::Tcp(t) => t,
        other => panic!("expected TCP, got {other:?}"),
    }
}

fn udp_of(p: &Packet<'_>) -> UdpHeader {
    match p.transport {
        Transport::Udp(u) => u,
        other => panic!("expected UDP, got {other:?}"),
    }
}

fn icmp_of(p: &Packet<'_>) -> IcmpHeader {
    match p.transport {
        Transport::Icmp(i) => i,
        other => panic!("expected ICMP, got {other:?}"),
    }
}

/// Asserts the inner TCP 10.0.0.1:1234 -> 10.0.0.2:80 with payload "hello".
fn assert_tcp4(p: &Packet<'_>) {
    assert_eq!(p.ip.version, 4);
    assert_eq!(p.ip.src, mapped(SRC4));
    assert_eq!(p.ip.dst, mapped(DST4));
    assert_eq!(p.ip.proto, 6);
    let t = tcp_of(p);
    assert_eq!((t.src_port, t.dst_port), (1234, 80));
    assert_eq!(t.seg_len, 5);
    assert_eq!(p.payload, b"hello");
}

fn assert_tcp6(p: &Packet<'_>) {
    assert_eq!(p.ip.version, 6);
    assert_eq!(p.ip.src, SRC6);
    assert_eq!(p.ip.dst, DST6);
    let t = tcp_of(p);
    assert_eq!((t.src_port, t.dst_port), (1234, 80));
    assert_eq!(t.seg_len, 5);
    assert_eq!(p.payload, b"hello");
}

// ---------------------------------------------------------------------------------------------
// The corpus of valid frames: each one is decoded by a test below and fed to the prefix and
// mutation robustness tests.

fn f_eth_padded() -> Vec<u8> {
    let mut f = eth(0x0800, &tcp4());
    f.extend_from_slice(&[0; 12]); // Ethernet padding / FCS
    f
}
fn f_eth_llc_snap() -> Vec<u8> {
    let ip = tcp4();
    let llc = cat(&[&[0xaa, 0xaa, 0x03, 0, 0, 0], &be16(0x0800), &ip]);
    eth(llc.len() as u16, &llc)
}
fn f_vlan() -> Vec<u8> {
    eth(0x8100, &cat(&[&vlan_tag(0x2064, 0x0800), &tcp4()]))
}
fn f_qinq() -> Vec<u8> {
    eth(
        0x88a8,
        &cat(&[
            &vlan_tag(100, 0x8100),
            &vlan_tag(200, 0x9100),
            &vlan_tag(300, 0x86dd),
            &tcp6(),
        ]),
    )
}
fn f_mpls4() -> Vec<u8> {
    eth(
        0x8847,
        &cat(&[
            &[0x00, 0x01, 0x00, 0x40],
            &[0x00, 0x02, 0x01, 0x40],
            &tcp4(),
        ]),
    )
}
fn f_mpls6() -> Vec<u8> {
    eth(0x8848, &cat(&[&[0x00, 0x00, 0x21, 0x40], &tcp6()]))
}
fn f_mpls_pw() -> Vec<u8> {
    eth(
        0x8847,
        &cat(&[
            &[0x00, 0x01, 0x01, 0x40],
            &[0, 0, 0, 0],
            &eth(0x0800, &tcp4()),
        ]),
    )
}
fn f_pppoe4() -> Vec<u8> {
    let ip = tcp4();
    let mut body = cat(&[
        &[0x11, 0x00, 0x12, 0x34],
        &be16(ip.len() as u16 + 2),
        &be16(0x0021),
        &ip,
    ]);
    body.extend_from_slice(&[0xee; 6]); // padding beyond the PPPoE length
    eth(0x8864, &body)
}
fn f_pppoe6() -> Vec<u8> {
    let ip = tcp6();
    eth(
        0x8864,
        &cat(&[
            &[0x11, 0x00, 0x12, 0x34],
            &be16(ip.len() as u16 + 2),
            &be16(0x0057),
            &ip,
        ]),
    )
}
fn f_gre_ip() -> Vec<u8> {
    eth(0x0800, &ipv4(47, &gre(0, 0x0800, &[], &tcp4())))
}
fn f_gre_ckey_seq() -> Vec<u8> {
    eth(
        0x0800,
        &ipv4(
            47,
            &gre(
                0xb000,
                0x86dd,
                &[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9],
                &tcp6(),
            ),
        ),
    )
}
fn f_gre_teb() -> Vec<u8> {
    eth(
        0x86dd,
        &ipv6(
            47,
            &gre(0x2000, 0x6558, &[0, 0, 0, 1], &eth(0x0800, &tcp4())),
        ),
    )
}
fn f_erspan1() -> Vec<u8> {
    eth(
        0x0800,
        &ipv4(47, &gre(0, 0x88be, &[], &eth(0x0800, &tcp4()))),
    )
}
fn f_erspan2() -> Vec<u8> {
    let erspan = [0x10, 0x64, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05];
    let inner = eth(0x8100, &cat(&[&vlan_tag(42, 0x0800), &tcp4()]));
    eth(
        0x0800,
        &ipv4(
            47,
            &gre(0x1000, 0x88be, &[0, 0, 0, 1], &cat(&[&erspan, &inner])),
        ),
    )
}
fn f_erspan3() -> Vec<u8> {
    // ver 2, vlan 100; timestamp; SGT; P=0 FT=0 HWID=1 D=0 Gra=0 O=1; 8-byte subheader.
    let erspan = [
        0x20, 0x64, 0x00, 0x01, 0, 0, 0, 1, 0, 0, 0x00, 0x11, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    eth(
        0x0800,
        &ipv4(
            47,
            &gre(
                0x1000,
                0x22eb,
                &[0, 0, 0, 1],
                &cat(&[&erspan, &eth(0x86dd, &tcp6())]),
            ),
        ),
    )
}
fn f_aruba() -> Vec<u8> {
    eth(
        0x8100,
        &cat(&[
            &vlan_tag(300, 0x0800),
            &ipv4(47, &gre(0, 0x8200, &[], &wlan_qos(0x01, 0x0800, &tcp4()))),
        ]),
    )
}
fn f_aruba_4addr_htc() -> Vec<u8> {
    eth(
        0x0800,
        &ipv4(47, &gre(0, 0x8210, &[], &wlan_qos(0x83, 0x86dd, &tcp6()))),
    )
}
fn f_vxlan() -> Vec<u8> {
    let vx = [0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
    eth(
        0x0800,
        &ipv4(17, &udp(50000, 4789, &cat(&[&vx, &eth(0x0800, &tcp4())]))),
    )
}
fn f_vxlan_8472() -> Vec<u8> {
    let vx = [0x08, 0, 0, 0, 0, 0, 0x01, 0];
    eth(
        0x86dd,
        &ipv6(17, &udp(50000, 8472, &cat(&[&vx, &eth(0x86dd, &tcp6())]))),
    )
}
fn f_ipip() -> Vec<u8> {
    eth(0x0800, &ipv4_full(4, &tcp4(), 0, &[], [192, 168, 0, 1]))
}
fn f_6in4() -> Vec<u8> {
    eth(0x0800, &ipv4(41, &tcp6()))
}
fn f_4in6() -> Vec<u8> {
    eth(0x86dd, &ipv6(4, &tcp4()))
}
fn tcp_opts_bytes() -> Vec<u8> {
    cat(&[
        &[2, 4, 0x05, 0xb4],              // MSS 1460
        &[1],                             // NOP
        &[3, 3, 7],                       // WS 7
        &[4, 2],                          // SACK permitted
        &[8, 10, 0, 0, 0, 1, 0, 0, 0, 2], // TS 1, 2
    ])
}
fn sack_opts_bytes() -> Vec<u8> {
    cat(&[
        &[1, 1, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4], // NOP NOP TS 3, 4
        &[1, 1, 5, 26],
        &100u32.to_be_bytes(),
        &200u32.to_be_bytes(),
        &300u32.to_be_bytes(),
        &400u32.to_be_bytes(),
        &500u32.to_be_bytes(),
        &600u32.to_be_bytes(),
    ])
}
fn f_tcp_sack() -> Vec<u8> {
    eth(
        0x0800,
        &ipv4(6, &tcp(1, 2, tcp_flags::ACK, &sack_opts_bytes(), b"")),
    )
}
fn f_tcp_opts() -> Vec<u8> {
    let opts = tcp_opts_bytes();
    eth(0x0800, &ipv4(6, &tcp(1, 2, tcp_flags::SYN, &opts, b"")))
}
fn f_v6_ext() -> Vec<u8> {
    let inner = tcp(1234, 80, tcp_flags::ACK, &[], b"hello");
    let dst_opts = cat(&[&[6, 0], &[1, 4, 0, 0, 0, 0]]);
    let routing = cat(&[&[60, 2, 0, 0, 0, 0, 0, 0], &SRC6]);
    let hbh = cat(&[&[43, 0], &[1, 4, 0, 0, 0, 0]]);
    eth(0x86dd, &ipv6(0, &cat(&[&hbh, &routing, &dst_opts, &inner])))
}
fn f_v6_frag() -> Vec<u8> {
    // Non-first fragment: offset 185*8, M=1.
    let frag = cat(&[
        &[17, 0],
        &be16((185 << 3) | 1),
        &0xdead_beefu32.to_be_bytes(),
    ]);
    eth(0x86dd, &ipv6(44, &cat(&[&frag, b"fragment data"])))
}
fn f_v4_first_frag() -> Vec<u8> {
    eth(
        0x0800,
        &ipv4_full(
            6,
            &tcp(1234, 80, tcp_flags::ACK, &[], b"hello"),
            0x2000,
            &[],
            SRC4,
        ),
    )
}
fn f_v4_opts_frag() -> Vec<u8> {
    eth(
        0x0800,
        &ipv4_full(17, b"more data", 0x0005, &[1, 1, 1, 0], SRC4),
    )
}
fn f_icmp_echo() -> Vec<u8> {
    eth(0x0800, &ipv4(1, &[8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x']))
}
fn f_icmp_unreach_tcp() -> Vec<u8> {
    let quoted = ipv4_full(6, &tcp(4321, 443, tcp_flags::SYN, &[], b""), 0, &[], DST4);
    let q = &quoted[..28];
    eth(0x0800, &ipv4(1, &cat(&[&[3, 3, 0, 0, 0, 0, 0, 0], q])))
}
fn f_icmp_ttl_udp() -> Vec<u8> {
    let quoted = ipv4(17, &udp(5353, 53, b"query"));
    eth(
        0x0800,
        &ipv4(1, &cat(&[&[11, 0, 0, 0, 0, 0, 0, 0], &quoted[..28]])),
    )
}
fn f_icmp6_ptb_udp() -> Vec<u8> {
    let inner = ipv6(
        60,
        &cat(&[&[17, 0, 1, 4, 0, 0, 0, 0], &udp(1111, 2222, b"abc")]),
    );
    eth(
        0x86dd,
        &ipv6(58, &cat(&[&[2, 0, 0, 0, 0, 0, 0x05, 0x00], &inner])),
    )
}
fn f_icmp6_echo() -> Vec<u8> {
    eth(0x86dd, &ipv6(58, &[128, 0, 0, 0, 0xbe, 0xef, 0, 1]))
}
fn f_sll() -> Vec<u8> {
    cat(&[
        &[0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0],
        &be16(0x0800),
        &tcp4(),
    ])
}
fn f_sll2() -> Vec<u8> {
    cat(&[
        &be16(0x86dd),
        &[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0],
        &tcp6(),
    ])
}
fn f_sll_ipgre() -> Vec<u8> {
    // ARPHRD_IPGRE (778): the protocol field is the GRE protocol type (here ERSPAN III, FT=2:
    // a bare IP packet).
    let erspan = [0x20, 0x64, 0x00, 0x01, 0, 0, 0, 1, 0, 0, 0x08, 0x10];
    cat(&[
        &[0, 0, 0x03, 0x0a, 0, 4, 10, 0, 0, 1, 0, 0, 0, 0],
        &be16(0x22eb),
        &erspan,
        &tcp4(),
    ])
}
fn f_null_le() -> Vec<u8> {
    cat(&[&2u32.to_le_bytes(), &tcp4()])
}
fn f_null_be6() -> Vec<u8> {
    cat(&[&30u32.to_be_bytes(), &tcp6()])
}
fn f_loop() -> Vec<u8> {
    cat(&[&24u32.to_be_bytes(), &tcp6()])
}
fn f_nflog() -> Vec<u8> {
    let ip = tcp4();
    let mut f = vec![2, 0, 0, 0];
    // NFULA_PACKET_HDR (type 1), 8 bytes.
    f.extend_from_slice(&[8, 0, 1, 0, 0x08, 0x00, 3, 0]);
    // NFULA_PREFIX (type 10), 5 bytes padded to 8.
    f.extend_from_slice(&[5, 0, 10, 0, b'x', 0, 0, 0]);
    // NFULA_PAYLOAD (type 9).
    f.extend_from_slice(&(ip.len() as u16 + 4).to_le_bytes());
    f.extend_from_slice(&[9, 0]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 3]); // padding
    f
}
fn f_fddi() -> Vec<u8> {
    cat(&[
        &[0x50],
        &[1; 6],
        &[2; 6],
        &[0xaa, 0xaa, 0x03, 0, 0, 0],
        &be16(0x0800),
        &tcp4(),
    ])
}
fn f_wlan() -> Vec<u8> {
    // Non-QoS data frame, FromDS.
    let mut f = vec![0x08, 0x02, 0, 0];
    f.extend_from_slice(&[1; 18]);
    f.extend_from_slice(&[0x20, 0x00]);
    f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0]);
    f.extend_from_slice(&be16(0x0800));
    f.extend_from_slice(&tcp4());
    f
}

fn corpus() -> Vec<(&'static str, LinkType, Vec<u8>)> {
    let e = LinkType::ETHERNET;
    vec![
        ("eth_padded", e, f_eth_padded()),
        ("eth_llc_snap", e, f_eth_llc_snap()),
        ("vlan", e, f_vlan()),
        ("qinq", e, f_qinq()),
        ("mpls4", e, f_mpls4()),
        ("mpls6", e, f_mpls6()),
        ("mpls_pw", e, f_mpls_pw()),
        ("pppoe4", e, f_pppoe4()),
        ("pppoe6", e, f_pppoe6()),
        ("gre_ip", e, f_gre_ip()),
        ("gre_ckey_seq", e, f_gre_ckey_seq()),
        ("gre_teb", e, f_gre_teb()),
        ("erspan1", e, f_erspan1()),
        ("erspan2", e, f_erspan2()),
        ("erspan3", e, f_erspan3()),
        ("aruba", e, f_aruba()),
        ("aruba_4addr_htc", e, f_aruba_4addr_htc()),
        ("vxlan", e, f_vxlan()),
        ("vxlan_8472", e, f_vxlan_8472()),
        ("ipip", e, f_ipip()),
        ("6in4", e, f_6in4()),
        ("4in6", e, f_4in6()),
        ("tcp_opts", e, f_tcp_opts()),
        ("tcp_sack", e, f_tcp_sack()),
        ("v6_ext", e, f_v6_ext()),
        ("v6_frag", e, f_v6_frag()),
        ("v4_first_frag", e, f_v4_first_frag()),
        ("v4_opts_frag", e, f_v4_opts_frag()),
        ("icmp_echo", e, f_icmp_echo()),
        ("icmp_unreach_tcp", e, f_icmp_unreach_tcp()),
        ("icmp_ttl_udp", e, f_icmp_ttl_udp()),
        ("icmp6_ptb_udp", e, f_icmp6_ptb_udp()),
        ("icmp6_echo", e, f_icmp6_echo()),
        ("raw4", LinkType::RAW, tcp4()),
        ("raw6", LinkType::RAW, tcp6()),
        ("raw12", LinkType::RAW_12, tcp4()),
        ("raw14", LinkType::RAW_14, tcp6()),
        ("ipv4", LinkType::IPV4, tcp4()),
        ("ipv6", LinkType::IPV6, tcp6()),
        ("sll", LinkType::LINUX_SLL, f_sll()),
        ("sll2", LinkType::LINUX_SLL2, f_sll2()),
        ("sll_ipgre", LinkType::LINUX_SLL, f_sll_ipgre()),
        ("null_le", LinkType::NULL, f_null_le()),
        ("null_be6", LinkType::NULL, f_null_be6()),
        ("loop", LinkType::LOOP, f_loop()),
        ("nflog", LinkType::NFLOG, f_nflog()),
        ("fddi", LinkType::FDDI, f_fddi()),
        ("wlan", LinkType::IEEE802_11, f_wlan()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Link types.

#[test]
fn every_corpus_frame_decodes_to_ip() {
    for (name, lt, f) in corpus() {
        assert!(
            matches!(decode(lt, &f), Decoded::Ip(_)),
            "{name}: {:?}",
            decode(lt, &f)
        );
    }
}

#[test]
fn ethernet_padding_is_excluded() {
    let f = f_eth_padded();
    let p = pkt(dl(LinkType::ETHERNET, &f));
    assert_tcp4(&p);
    assert_eq!(p.vlan, [None, None]);
    assert_eq!(p.encap, 0);
    assert_eq!(p.ip.ttl, 64);
    let t = tcp_of(&p);
    assert_eq!(
        (t.seq, t.ack, t.window, t.header_len),
        (1000, 2000, 65535, 20)
    );
    assert_eq!(t.flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(
        p.ip.frag,
        Fragment {
            id: 0x1234,
            ..Fragment::default()
        }
    );
}

#[test]
fn ethernet_8023_llc() {
    assert_tcp4(&pkt(dl(LinkType::ETHERNET, &f_eth_llc_snap())));
    // STP: 802.3 length, LLC 42 42 03.
    let stp = eth(38, &cat(&[&[0x42, 0x42, 0x03], &[0; 35]]));
    assert_eq!(decode(LinkType::ETHERNET, &stp), Decoded::NotIp(0));
    // SNAP with a Cisco OUI (CDP).
    let cdp = eth(
        30,
        &cat(&[&[0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00], &[0; 22]]),
    );
    assert_eq!(decode(LinkType::ETHERNET, &cdp), Decoded::NotIp(0));
    // ARP and LLDP.
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x0806, &[0; 28])),
        Decoded::NotIp(0x0806)
    );
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x88cc, &[0; 28])),
        Decoded::NotIp(0x88cc)
    );
    // Wrong IP version behind 0x0800.
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x0800, &tcp6())),
        Decoded::Malformed(Malformed::BadIpVersion)
    );
}

#[test]
fn raw_ip_link_types() {
    for lt in [
        LinkType::RAW,
        LinkType::RAW_12,
        LinkType::RAW_14,
        LinkType::IPV4,
    ] {
        assert_tcp4(&pkt(dl(lt, &tcp4())));
    }
    for lt in [
        LinkType::RAW,
        LinkType::RAW_12,
        LinkType::RAW_14,
        LinkType::IPV6,
    ] {
        assert_tcp6(&pkt(dl(lt, &tcp6())));
    }
    assert_eq!(
        decode(LinkType::IPV4, &tcp6()),
        Decoded::Malformed(Malformed::BadIpVersion)
    );
    assert_eq!(
        decode(LinkType::IPV6, &tcp4()),
        Decoded::Malformed(Malformed::BadIpVersion)
    );
    assert_eq!(
        decode(LinkType::RAW, &[0x50; 40]),
        Decoded::Malformed(Malformed::BadIpVersion)
    );
}

#[test]
fn cooked_loopback_nflog_fddi_wlan() {
    assert_tcp4(&pkt(dl(LinkType::LINUX_SLL, &f_sll())));
    assert_tcp6(&pkt(dl(LinkType::LINUX_SLL2, &f_sll2())));
    let p = pkt(dl(LinkType::LINUX_SLL, &f_sll_ipgre()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::ERSPAN3);
    assert_tcp4(&pkt(dl(LinkType::NULL, &f_null_le())));
    assert_tcp4(&pkt(dl(
        LinkType::NULL,
        &cat(&[&2u32.to_be_bytes(), &tcp4()]),
    )));
    assert_tcp6(&pkt(dl(LinkType::NULL, &f_null_be6())));
    assert_tcp6(&pkt(dl(
        LinkType::NULL,
        &cat(&[&28u32.to_le_bytes(), &tcp6()]),
    )));
    assert_tcp6(&pkt(dl(LinkType::LOOP, &f_loop())));
    assert_eq!(
        decode(LinkType::NULL, &cat(&[&23u32.to_le_bytes(), &[0; 20]])),
        Decoded::NotIp(0)
    );
    assert_tcp4(&pkt(dl(LinkType::NFLOG, &f_nflog())));
    assert_tcp4(&pkt(dl(LinkType::FDDI, &f_fddi())));
    assert_tcp4(&pkt(dl(LinkType::IEEE802_11, &f_wlan())));
    // SLL carrying ARP, SLL with 802.2 LLC (STP).
    let mut arp = f_sll();
    arp[14..16].copy_from_slice(&be16(0x0806));
    assert_eq!(decode(LinkType::LINUX_SLL, &arp), Decoded::NotIp(0x0806));
    let mut stp = f_sll()[..16].to_vec();
    stp[14..16].copy_from_slice(&be16(0x0004));
    stp.extend_from_slice(&[0x42, 0x42, 0x03, 0, 0]);
    assert_eq!(decode(LinkType::LINUX_SLL, &stp), Decoded::NotIp(0));
    // NFLOG without payload TLV; NFLOG with a zero TLV length.
    assert_eq!(
        decode(LinkType::NFLOG, &[2, 0, 0, 0, 8, 0, 1, 0, 0, 0, 0, 0]),
        Decoded::Malformed(Malformed::TruncatedLink)
    );
    assert_eq!(
        decode(LinkType::NFLOG, &[2, 0, 0, 0, 0, 0, 9, 0, 0x45]),
        Decoded::Malformed(Malformed::TruncatedLink)
    );
    // FDDI SMT frame.
    assert_eq!(decode(LinkType::FDDI, &[0x41; 30]), Decoded::NotIp(0));
}

#[test]
fn wlan_non_data_frames_are_not_ip() {
    // Beacon (management).
    assert_eq!(
        decode(LinkType::IEEE802_11, &[0x80, 0, 0, 0, 1, 2, 3]),
        Decoded::NotIp(0)
    );
    // ACK (control).
    assert_eq!(
        decode(LinkType::IEEE802_11, &[0xd4, 0, 0, 0, 1, 2]),
        Decoded::NotIp(0)
    );
    // QoS null.
    assert_eq!(
        decode(LinkType::IEEE802_11, &[0xc8, 0x01, 0, 0]),
        Decoded::NotIp(0)
    );
    // Protected data.
    let mut f = f_wlan();
    f[1] |= 0x40;
    assert_eq!(decode(LinkType::IEEE802_11, &f), Decoded::NotIp(0));
    // Non-first 802.11 fragment.
    let mut f = f_wlan();
    f[22] |= 0x01;
    assert_eq!(decode(LinkType::IEEE802_11, &f), Decoded::NotIp(0));
    // Truncated MAC header.
    assert_eq!(
        decode(LinkType::IEEE802_11, &f_wlan()[..20]),
        Decoded::Malformed(Malformed::TruncatedEncap)
    );
}

#[test]
fn unsupported_link_types_and_names() {
    assert_eq!(
        decode(LinkType(147), &tcp4()),
        Decoded::UnsupportedLinkType(LinkType(147))
    );
    assert!(!supports_linktype(LinkType(147)));
    assert!(!supports_linktype(LinkType(127)));
    for (_, lt, _) in corpus() {
        assert!(supports_linktype(lt));
        assert!(!linktype_name(lt).contains("unknown"));
    }
    assert_eq!(linktype_name(LinkType::ETHERNET), "LINKTYPE_ETHERNET (1)");
    assert_eq!(
        linktype_name(LinkType::LINUX_SLL2),
        "LINKTYPE_LINUX_SLL2 (276)"
    );
    assert_eq!(linktype_name(LinkType(147)), "LINKTYPE 147 (unknown)");
    assert_eq!(
        linktype_name(LinkType(127)),
        "LINKTYPE_IEEE802_11_RADIOTAP (127)"
    );
}

// ---------------------------------------------------------------------------------------------
// Layer-2 shims.

#[test]
fn vlan_tags() {
    let p = pkt(dl(LinkType::ETHERNET, &f_vlan()));
    assert_tcp4(&p);
    assert_eq!(p.vlan, [Some(100), None]); // PCP bits masked off
    assert_eq!(p.encap, encap::VLAN);

    let p = pkt(dl(LinkType::ETHERNET, &f_qinq()));
    assert_tcp6(&p);
    assert_eq!(p.vlan, [Some(100), Some(200)]);
    assert_eq!(p.encap, encap::VLAN);

    // A tag followed by an 802.3 length and LLC/SNAP.
    let llc = cat(&[&[0xaa, 0xaa, 0x03, 0, 0, 0], &be16(0x0800), &tcp4()]);
    let f = eth(0x8100, &cat(&[&vlan_tag(7, llc.len() as u16), &llc]));
    let p = pkt(dl(LinkType::ETHERNET, &f));
    assert_tcp4(&p);
    assert_eq!(p.vlan, [Some(7), None]);

    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x8100, &[0, 1])),
        Decoded::Malformed(Malformed::TruncatedEncap)
    );
}

#[test]
fn mpls_stacks() {
    let p = pkt(dl(LinkType::ETHERNET, &f_mpls4()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::MPLS);
    assert_tcp6(&pkt(dl(LinkType::ETHERNET, &f_mpls6())));
    let p = pkt(dl(LinkType::ETHERNET, &f_mpls_pw()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::MPLS);
    // No bottom-of-stack within the frame.
    assert_eq!(
        decode(
            LinkType::ETHERNET,
            &eth(0x8847, &[0, 1, 0, 64, 0, 2, 0, 64])
        ),
        Decoded::Malformed(Malformed::TruncatedEncap)
    );
    // An endless label stack.
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x8847, &[0u8; 200])),
        Decoded::Malformed(Malformed::TooDeep)
    );
    // Unknown payload nibble.
    assert_eq!(
        decode(
            LinkType::ETHERNET,
            &eth(0x8847, &[0, 1, 1, 64, 0x10, 0, 0, 0])
        ),
        Decoded::NotIp(0x8847)
    );
}

#[test]
fn pppoe_sessions() {
    let p = pkt(dl(LinkType::ETHERNET, &f_pppoe4()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::PPPOE);
    assert_tcp6(&pkt(dl(LinkType::ETHERNET, &f_pppoe6())));
    // LCP.
    let lcp = eth(0x8864, &[0x11, 0, 0, 1, 0, 6, 0xc0, 0x21, 1, 1, 0, 4]);
    assert_eq!(decode(LinkType::ETHERNET, &lcp), Decoded::NotIp(0x8864));
    // Discovery.
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x8863, &[0x11, 0x09, 0, 0, 0, 0])),
        Decoded::NotIp(0x8863)
    );
}

// ---------------------------------------------------------------------------------------------
// Tunnels.

#[test]
fn gre_variants() {
    let p = pkt(dl(LinkType::ETHERNET, &f_gre_ip()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::GRE);
    let p = pkt(dl(LinkType::ETHERNET, &f_gre_ckey_seq()));
    assert_tcp6(&p);
    assert_eq!(p.encap, encap::GRE);
    let p = pkt(dl(LinkType::ETHERNET, &f_gre_teb()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::GRE);
    // Unknown GRE version.
    let f = eth(0x0800, &ipv4(47, &gre(0x0002, 0x0800, &[], &tcp4())));
    assert_eq!(
        decode(LinkType::ETHERNET, &f),
        Decoded::Malformed(Malformed::BadTunnel)
    );
    // GRE cut short (key bit set, no key).
    let f = eth(0x0800, &ipv4(47, &gre(0x2000, 0x0800, &[], &[])));
    assert_eq!(
        decode(LinkType::ETHERNET, &f),
        Decoded::Malformed(Malformed::BadTunnel)
    );
    // RFC 1701 routing: one SRE then the NULL SRE.
    let sre = [0x08, 0x00, 0, 4, 1, 2, 3, 4, 0, 0, 0, 0];
    let f = eth(
        0x0800,
        &ipv4(
            47,
            &gre(0x4000, 0x0800, &[0, 0, 0, 0], &cat(&[&sre, &tcp4()])),
        ),
    );
    assert_tcp4(&pkt(dl(LinkType::ETHERNET, &f)));
    // PPTP enhanced GRE carrying PPP/IPv4 (address/control present).
    let f = eth(
        0x0800,
        &ipv4(
            47,
            &gre(
                0x3081,
                0x880b,
                &[0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 4],
                &cat(&[&[0xff, 0x03, 0x00, 0x21], &tcp4()]),
            ),
        ),
    );
    assert_tcp4(&pkt(dl(LinkType::ETHERNET, &f)));
    // PPTP with compressed protocol field carrying encrypted data (0xfd).
    let f = eth(
        0x0800,
        &ipv4(47, &gre(0x2001, 0x880b, &[0, 4, 0, 1], &[0xfd, 1, 2, 3])),
    );
    assert_eq!(decode(LinkType::ETHERNET, &f), Decoded::NotIp(0x880b));
}

#[test]
fn erspan() {
    let p = pkt(dl(LinkType::ETHERNET, &f_erspan1()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::GRE | encap::ERSPAN2);
    let p = pkt(dl(LinkType::ETHERNET, &f_erspan2()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::GRE | encap::ERSPAN2 | encap::VLAN);
    assert_eq!(p.vlan, [Some(42), None]);
    let p = pkt(dl(LinkType::ETHERNET, &f_erspan3()));
    assert_tcp6(&p);
    assert_eq!(p.encap, encap::GRE | encap::ERSPAN3);
    // ERSPAN III without the optional subheader.
    let erspan = [0x20, 0x64, 0x00, 0x01, 0, 0, 0, 1, 0, 0, 0x00, 0x10];
    let f = eth(
        0x0800,
        &ipv4(
            47,
            &gre(
                0x1000,
                0x22eb,
                &[0, 0, 0, 1],
                &cat(&[&erspan, &eth(0x0800, &tcp4())]),
            ),
        ),
    );
    assert_tcp4(&pkt(dl(LinkType::ETHERNET, &f)));
    // Bad ERSPAN II version.
    let mut f = f_erspan2();
    let at = 14 + 20 + 8;
    f[at] = 0x30;
    assert_eq!(
        decode(LinkType::ETHERNET, &f),
        Decoded::Malformed(Malformed::BadTunnel)
    );
}

#[test]
fn aruba_wlan_in_gre() {
    let p = pkt(dl(LinkType::ETHERNET, &f_aruba()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::VLAN | encap::GRE | encap::WLAN);
    assert_eq!(p.vlan, [Some(300), None]);
    let p = pkt(dl(LinkType::ETHERNET, &f_aruba_4addr_htc()));
    assert_tcp6(&p);
    // Management frame in Aruba GRE.
    let f = eth(
        0x0800,
        &ipv4(47, &gre(0, 0x8200, &[], &[0x80, 0, 0, 0, 0, 0])),
    );
    assert_eq!(decode(LinkType::ETHERNET, &f), Decoded::NotIp(0));
    // EAPOL over 802.11.
    let f = eth(
        0x0800,
        &ipv4(
            47,
            &gre(0, 0x8200, &[], &wlan_qos(0x01, 0x888e, &[1, 3, 0, 0])),
        ),
    );
    assert_eq!(decode(LinkType::ETHERNET, &f), Decoded::NotIp(0x888e));
}

#[test]
fn vxlan() {
    let p = pkt(dl(LinkType::ETHERNET, &f_vxlan()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::VXLAN);
    let p = pkt(dl(LinkType::ETHERNET, &f_vxlan_8472()));
    assert_tcp6(&p);
    assert_eq!(p.encap, encap::VXLAN);
    // Invalid flags or reserved bits: plain UDP.
    for (at, v) in [(0, 0x0c), (1, 1), (7, 1)] {
        let mut vx = [0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
        vx[at] = v;
        let f = eth(
            0x0800,
            &ipv4(17, &udp(50000, 4789, &cat(&[&vx, &eth(0x0800, &tcp4())]))),
        );
        let p = pkt(dl(LinkType::ETHERNET, &f));
        let u = udp_of(&p);
        assert_eq!(u.dst_port, 4789);
        assert_eq!(p.encap, 0);
    }
    // Other port: plain UDP.
    let vx = [0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
    let f = eth(
        0x0800,
        &ipv4(17, &udp(50000, 4790, &cat(&[&vx, &eth(0x0800, &tcp4())]))),
    );
    assert_eq!(udp_of(&pkt(dl(LinkType::ETHERNET, &f))).dst_port, 4790);
}

#[test]
fn ip_in_ip() {
    let p = pkt(dl(LinkType::ETHERNET, &f_ipip()));
    assert_tcp4(&p);
    assert_eq!(p.encap, encap::IPIP);
    assert_tcp6(&pkt(dl(LinkType::ETHERNET, &f_6in4())));
    assert_tcp4(&pkt(dl(LinkType::ETHERNET, &f_4in6())));
    // 41 carrying IPv4: wrong version.
    let f = eth(0x0800, &ipv4(41, &tcp4()));
    assert_eq!(
        decode(LinkType::ETHERNET, &f),
        Decoded::Malformed(Malformed::BadIpVersion)
    );
}

#[test]
fn nesting_is_bounded() {
    let mut ip = tcp4();
    for _ in 0..40 {
        ip = ipv4(4, &ip);
    }
    assert_eq!(
        decode(LinkType::RAW, &ip),
        Decoded::Malformed(Malformed::TooDeep)
    );
    // GRE in GRE in ...
    let mut ip = tcp4();
    for _ in 0..40 {
        ip = ipv4(47, &gre(0, 0x0800, &[], &ip));
    }
    assert_eq!(
        decode(LinkType::RAW, &ip),
        Decoded::Malformed(Malformed::TooDeep)
    );
    // Many VLAN tags.
    let mut body = tcp4();
    for _ in 0..40 {
        body = cat(&[&vlan_tag(1, 0x8100), &body]);
    }
    assert_eq!(
        decode(LinkType::ETHERNET, &eth(0x8100, &body)),
        Decoded::Malformed(Malformed::TooDeep)
    );
    // Within the bound: 8 nested IPIP layers.
    let mut ip = tcp4();
    for _ in 0..8 {
        ip = ipv4(4, &ip);
    }
    assert_tcp4(&pkt(dl(LinkType::RAW, &ip)));
}

// ---------------------------------------------------------------------------------------------
// IP.

#[test]
fn ipv4_fragments() {
    // First fragment with MF: Fragment, even though the TCP header is there.
    let p = pkt(dl(LinkType::ETHERNET, &f_v4_first_frag()));
    assert_eq!(p.transport, Transport::Fragment);
    assert_eq!(p.ip.proto, 6);
    assert_eq!(
        p.ip.frag,
        Fragment {
            is_fragment: true,
            offset: 0,
            more: true,
            id: 0x1234
        }
    );
    // Non-first, last fragment with IP options.
    let p = pkt(dl(LinkType::ETHERNET, &f_v4_opts_frag()));
    assert_eq!(p.transport, Transport::Fragment);
    assert_eq!(
        p.ip.frag,
        Fragment {
            is_fragment: true,
            offset: 40,
            more: false,
            id: 0x1234
        }
    );
    assert_eq!(p.payload, b"more data");
    // DF alone is not a fragment.
    let p = pkt(dl(
        LinkType::RAW,
        &ipv4_full(6, &tcp(1, 2, 0, &[], b""), 0x4000, &[], SRC4),
    ));
    assert!(!p.ip.frag.is_fragment);
    assert!(matches!(p.transport, Transport::Tcp(_)));
    // Tunnels in fragments are not followed (the engine reassembles them first), not even in
    // a first fragment; the fragment's data is the payload.
    for proto in [4, 41, 47] {
        let f = ipv4_full(proto, &gre(0, 0x0800, &[], &tcp4()), 0x2000, &[], SRC4);
        let p = pkt(dl(LinkType::RAW, &f));
        assert_eq!(
            (p.transport, p.ip.proto, p.encap),
            (Transport::Fragment, proto, 0)
        );
        assert_eq!(p.payload, &f[20..]);
    }
    let vx = [0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
    let f = ipv4_full(
        17,
        &udp(1, 4789, &cat(&[&vx, &eth(0x0800, &tcp4())])),
        0x2000,
        &[],
        SRC4,
    );
    assert_eq!(pkt(dl(LinkType::RAW, &f)).transport, Transport::Fragment);
}

#[test]
fn ipv4_options_and_lengths() {
    let ip = ipv4_full(
        6,
        &tcp(1234, 80, 0, &[], b"hello"),
        0,
        &[0x94, 0x04, 0, 0],
        SRC4,
    );
    let t = tcp_of(&pkt(dl(LinkType::RAW, &ip)));
    assert_eq!(t.seg_len, 5);
    // Snapped capture: seg_len still from the IP total length.
    let full = ipv4(6, &tcp(1234, 80, 0, &[], &[7; 1000]));
    let p = pkt(dl(LinkType::RAW, &full[..60]));
    assert_eq!(tcp_of(&p).seg_len, 1000);
    assert_eq!(p.payload, &[7; 20][..]);
    // TSO capture: total length 0 -> captured length.
    let mut tso = ipv4(6, &tcp(1234, 80, 0, &[], &[7; 3000]));
    tso[2] = 0;
    tso[3] = 0;
    let p = pkt(dl(LinkType::RAW, &tso));
    assert_eq!(tcp_of(&p).seg_len, 3000);
    // IHL < 5, IHL > packet.
    let mut bad = tcp4();
    bad[0] = 0x44;
    assert_eq!(
        decode(LinkType::RAW, &bad),
        Decoded::Malformed(Malformed::BadIpHeaderLen)
    );
    bad[0] = 0x4f;
    assert_eq!(
        decode(LinkType::RAW, &bad[..40]),
        Decoded::Malformed(Malformed::BadIpHeaderLen)
    );
    // Total length < IHL.
    let mut bad = tcp4();
    bad[3] = 10;
    assert_eq!(
        decode(LinkType::RAW, &bad),
        Decoded::Malformed(Malformed::BadIpLength)
    );
    // Total length too small for a TCP header.
    let mut bad = tcp4();
    bad[2] = 0;
    bad[3] = 30;
    assert_eq!(
        decode(LinkType::RAW, &bad),
        Decoded::Malformed(Malformed::BadIpLength)
    );
    // Cut inside the IP header.
    assert_eq!(
        decode(LinkType::RAW, &tcp4()[..19]),
        Decoded::Malformed(Malformed::TruncatedIp)
    );
}

#[test]
fn ipv6_extension_chain() {
    let p = pkt(dl(LinkType::ETHERNET, &f_v6_ext()));
    assert_tcp6(&p);
    assert_eq!(p.ip.proto, 6);
    // Non-first fragment.
    let p = pkt(dl(LinkType::ETHERNET, &f_v6_frag()));
    assert_eq!(p.transport, Transport::Fragment);
    assert_eq!(p.ip.proto, 17);
    assert_eq!(
        p.ip.frag,
        Fragment {
            is_fragment: true,
            offset: 1480,
            more: true,
            id: 0xdead_beef
        }
    );
    assert_eq!(p.payload, b"fragment data");
    // Atomic fragment: a whole packet.
    let frag = cat(&[&[6, 0, 0, 0], &7u32.to_be_bytes()]);
    let f = ipv6(44, &cat(&[&frag, &tcp(1234, 80, 0, &[], b"hello")]));
    let p = pkt(dl(LinkType::RAW, &f));
    assert_tcp6(&p);
    assert!(!p.ip.frag.is_fragment);
    // AH then UDP.
    let ah = cat(&[&[17, 4, 0, 0], &[0; 20]]);
    let f = ipv6(51, &cat(&[&ah, &udp(1, 2, b"x")]));
    assert_eq!(udp_of(&pkt(dl(LinkType::RAW, &f))).payload_len, 1);
    // ESP and no-next-header: Other.
    let p = pkt(dl(LinkType::RAW, &ipv6(50, &[0; 16])));
    assert_eq!((p.transport, p.ip.proto), (Transport::Other, 50));
    let p = pkt(dl(LinkType::RAW, &ipv6(59, &[])));
    assert_eq!((p.transport, p.ip.proto), (Transport::Other, 59));
}

#[test]
fn ipv6_extension_loops_and_truncation() {
    // Destination options pointing at themselves, over and over.
    let mut chain = Vec::new();
    for _ in 0..20 {
        chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    let f = ipv6(60, &chain);
    assert_eq!(
        decode(LinkType::RAW, &f),
        Decoded::Malformed(Malformed::BadIpv6ExtChain)
    );
    // Exactly the bound is fine, one more is not.
    let mut chain = Vec::new();
    for _ in 0..MAX_IPV6_EXT_HEADERS - 1 {
        chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    let ok = ipv6(60, &cat(&[&chain, &tcp(1234, 80, 0, &[], b"hello")]));
    assert_tcp6(&pkt(dl(LinkType::RAW, &ok)));
    let too_long = ipv6(
        60,
        &cat(&[
            &[60, 0, 1, 4, 0, 0, 0, 0],
            &chain,
            &tcp(1234, 80, 0, &[], b"hello"),
        ]),
    );
    assert_eq!(
        decode(LinkType::RAW, &too_long),
        Decoded::Malformed(Malformed::BadIpv6ExtChain)
    );
    // Chain cut short by the payload length.
    let f = ipv6(0, &[6, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        decode(LinkType::RAW, &f),
        Decoded::Malformed(Malformed::BadIpv6ExtChain)
    );
    // Payload length 0 (jumbogram / GSO): captured length used.
    let mut f = f_v6_ext()[14..].to_vec();
    f[4] = 0;
    f[5] = 0;
    assert_tcp6(&pkt(dl(LinkType::RAW, &f)));
}

// ---------------------------------------------------------------------------------------------
// Transport.

#[test]
fn tcp_options() {
    let p = pkt(dl(LinkType::ETHERNET, &f_tcp_opts()));
    let t = tcp_of(&p);
    assert_eq!(t.header_len as usize, 20 + tcp_opts_bytes().len());
    assert_eq!(t.seg_len, 0);
    let o = t.options;
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(7));
    assert!(o.sack_permitted);
    assert_eq!(o.timestamps, Some((1, 2)));
    assert_eq!(o.sack_count, 0);

    let p = pkt(dl(LinkType::ETHERNET, &f_tcp_sack()));
    let t = tcp_of(&p);
    assert_eq!(t.header_len, 60);
    let o = t.options;
    assert_eq!((o.mss, o.wscale, o.sack_permitted), (None, None, false));
    assert_eq!(o.timestamps, Some((3, 4)));
    assert_eq!(o.sack_count, 3);
    assert_eq!(&o.sack[..3], &[(100, 200), (300, 400), (500, 600)]);

    // Four SACK blocks.
    let mut sack = vec![1, 1, 5, 34];
    for i in 0..8u32 {
        sack.extend_from_slice(&(i * 10).to_be_bytes());
    }
    let o = super::transport::tcp_options(&sack);
    assert_eq!(o.sack_count, 4);
    assert_eq!(o.sack[3], (60, 70));

    // Malformed lengths stop parsing, keeping what was parsed.
    let o = super::transport::tcp_options(&[2, 4, 0x05, 0xb4, 3, 0, 7, 4, 2]);
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, None);
    assert!(!o.sack_permitted);
    let o = super::transport::tcp_options(&[2, 4, 0x05, 0xb4, 8, 40, 0, 0]);
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.timestamps, None);
    let o = super::transport::tcp_options(&[2]);
    assert_eq!(o, TcpOptions::default());
    // A known option with a wrong (but self-consistent) length is skipped.
    let o = super::transport::tcp_options(&[2, 3, 5, 3, 3, 9, 0, 0]);
    assert_eq!((o.mss, o.wscale), (None, Some(9)));
    // EOL stops.
    let o = super::transport::tcp_options(&[0, 2, 4, 5, 0xb4]);
    assert_eq!(o.mss, None);
}

#[test]
fn tcp_bogus_header_lengths() {
    // Data offset < 5.
    let mut f = tcp4();
    f[20 + 12] = 0x40;
    assert_eq!(
        decode(LinkType::RAW, &f),
        Decoded::Malformed(Malformed::BadTcpHeaderLen)
    );
    // Data offset beyond the segment.
    let mut f = tcp4();
    f[20 + 12] = 0xf0;
    assert_eq!(
        decode(LinkType::RAW, &f),
        Decoded::Malformed(Malformed::BadTcpHeaderLen)
    );
    // Options cut by the capture.
    let f = ipv4(6, &tcp(1, 2, 0, &[2, 4, 5, 0xb4, 1, 1, 1, 0], &[0; 100]));
    assert_eq!(
        decode(LinkType::RAW, &f[..44]),
        Decoded::Malformed(Malformed::TruncatedTcp)
    );
    assert_eq!(
        decode(LinkType::RAW, &f[..30]),
        Decoded::Malformed(Malformed::TruncatedTcp)
    );
    // NS flag kept.
    let f = ipv4(6, &tcp(1, 2, 0x100 | tcp_flags::ACK, &[], b""));
    assert_eq!(tcp_of(&pkt(dl(LinkType::RAW, &f))).flags, 0x110);
}

#[test]
fn udp_lengths() {
    let f = ipv4(17, &udp(53, 5353, b"hello"));
    let p = pkt(dl(LinkType::RAW, &f));
    let u = udp_of(&p);
    assert_eq!((u.src_port, u.dst_port, u.payload_len), (53, 5353, 5));
    assert_eq!(p.payload, b"hello");
    // Length < 8.
    let mut bad = f.clone();
    bad[20 + 5] = 7;
    assert_eq!(
        decode(LinkType::RAW, &bad),
        Decoded::Malformed(Malformed::BadUdp)
    );
    // Length beyond the IP payload: IP length used.
    let mut big = f.clone();
    big[20 + 4] = 0x10;
    assert_eq!(udp_of(&pkt(dl(LinkType::RAW, &big))).payload_len, 5);
    // Length 0: IP length used.
    let mut zero = f.clone();
    zero[20 + 5] = 0;
    assert_eq!(udp_of(&pkt(dl(LinkType::RAW, &zero))).payload_len, 5);
    // Shorter UDP length than IP payload: payload bounded by UDP.
    let mut short = f.clone();
    short[20 + 5] = 10;
    let p = pkt(dl(LinkType::RAW, &short));
    assert_eq!((udp_of(&p).payload_len, p.payload), (2, &b"he"[..]));
    // Header cut short.
    assert_eq!(
        decode(LinkType::RAW, &f[..25]),
        Decoded::Malformed(Malformed::BadUdp)
    );
}

#[test]
fn icmp_messages() {
    let p = pkt(dl(LinkType::ETHERNET, &f_icmp_echo()));
    let i = icmp_of(&p);
    assert_eq!(
        (i.icmp_type, i.code, i.v6, i.echo_id),
        (8, 0, false, 0x1234)
    );
    assert!(!i.is_error());
    assert_eq!(i.quoted, None);

    let i = icmp_of(&pkt(dl(LinkType::ETHERNET, &f_icmp_unreach_tcp())));
    assert!(i.is_error());
    assert_eq!(
        i.quoted,
        Some(Quoted {
            ip_version: 4,
            src: mapped(DST4),
            dst: mapped(DST4),
            proto: 6,
            src_port: 4321,
            dst_port: 443
        })
    );
    let i = icmp_of(&pkt(dl(LinkType::ETHERNET, &f_icmp_ttl_udp())));
    let q = i.quoted.unwrap();
    assert_eq!((q.proto, q.src_port, q.dst_port), (17, 5353, 53));
    assert_eq!(q.src, mapped(SRC4));

    let i = icmp_of(&pkt(dl(LinkType::ETHERNET, &f_icmp6_ptb_udp())));
    assert!(i.v6 && i.is_error());
    let q = i.quoted.unwrap();
    assert_eq!(
        q,
        Quoted {
            ip_version: 6,
            src: SRC6,
            dst: DST6,
            proto: 17,
            src_port: 1111,
            dst_port: 2222
        }
    );
    let i = icmp_of(&pkt(dl(LinkType::ETHERNET, &f_icmp6_echo())));
    assert_eq!((i.icmp_type, i.echo_id, i.quoted), (128, 0xbeef, None));

    // Quoted header too short for ports: ports 0.
    let quoted = &ipv4(6, &tcp(1, 2, 0, &[], b""))[..22];
    let f = ipv4(1, &cat(&[&[3, 1, 0, 0, 0, 0, 0, 0], quoted]));
    let q = icmp_of(&pkt(dl(LinkType::RAW, &f))).quoted.unwrap();
    assert_eq!((q.proto, q.src_port, q.dst_port), (6, 0, 0));
    // Unparseable quoted header: None, not malformed.
    let f = ipv4(1, &cat(&[&[3, 1, 0, 0, 0, 0, 0, 0], &[0x45, 0, 0]]));
    assert_eq!(icmp_of(&pkt(dl(LinkType::RAW, &f))).quoted, None);
    let f = ipv4(1, &cat(&[&[11, 0, 0, 0, 0, 0, 0, 0], &[0x99; 40]]));
    assert_eq!(icmp_of(&pkt(dl(LinkType::RAW, &f))).quoted, None);
    // Truncated ICMP.
    assert_eq!(
        decode(LinkType::RAW, &ipv4(1, &[8, 0, 0])),
        Decoded::Malformed(Malformed::TruncatedIcmp)
    );
}

// ---------------------------------------------------------------------------------------------
// Robustness.

const ALL_LINKTYPES: [LinkType; 13] = [
    LinkType::NULL,
    LinkType::ETHERNET,
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
];

#[test]
fn zero_length_frames() {
    for lt in ALL_LINKTYPES {
        assert!(matches!(decode(lt, &[]), Decoded::Malformed(_)), "{lt:?}");
    }
}

/// Checks invariants that must hold for any decode result.
fn check(d: Decoded<'_>, frame: &[u8]) {
    if let Decoded::Ip(p) = d {
        // The payload is a sub-slice of the frame.
        let fs = frame.as_ptr() as usize;
        let ps = p.payload.as_ptr() as usize;
        assert!(p.payload.is_empty() || (ps >= fs && ps + p.payload.len() <= fs + frame.len()));
        assert!(p.ip.version == 4 || p.ip.version == 6);
        if let Transport::Tcp(t) = p.transport {
            assert!(t.header_len >= 20 && t.header_len <= 60);
            assert!(p.payload.len() <= t.seg_len as usize);
            assert!(usize::from(t.options.sack_count) <= MAX_SACK_BLOCKS);
        }
        if let Transport::Udp(u) = p.transport {
            assert!(p.payload.len() <= u.payload_len as usize);
        }
    }
}

/// Where the fast path answers, the general decoder must decode the frame to TCP and the
/// descriptor built from it must equal the fast path's.
fn check_fast(lt: LinkType, frame: &[u8]) -> bool {
    use crate::flow::desc::PacketDesc;
    let Some(f) = crate::flow::fast::descriptor(7, 8, 9, lt, frame) else {
        return false;
    };
    let Decoded::Ip(p) = decode(lt, frame) else {
        panic!(
            "fast path took {frame:02x?}, the decoder gives {:?}",
            decode(lt, frame)
        );
    };
    assert!(matches!(p.transport, Transport::Tcp(_)), "{frame:02x?}");
    assert_eq!(f, PacketDesc::from_packet(7, 8, 9, &p), "{frame:02x?}");
    true
}

/// Frames for the fast path beyond the corpus: plain Ethernet IPv6, IPv4 total length 0 and
/// IPv6 payload length 0 (GSO captures), a payload beyond the snap length, a DNS port.
fn fast_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut tso4 = eth(0x0800, &tcp4());
    tso4[16..18].copy_from_slice(&[0, 0]);
    let mut gso6 = eth(0x86dd, &tcp6());
    gso6[18..20].copy_from_slice(&[0, 0]);
    let mut snapped = eth(0x0800, &ipv4(6, &tcp(1, 2, tcp_flags::ACK, &[], &[7; 100])));
    snapped.truncate(60);
    let ts = [1, 1, 8, 10, 0, 0, 1, 2, 0, 0, 3, 4];
    vec![
        ("eth6", eth(0x86dd, &tcp6())),
        (
            "nop_nop_ts",
            eth(0x0800, &ipv4(6, &tcp(1, 2, tcp_flags::ACK, &ts, b"abc"))),
        ),
        ("vlan6", eth(0x8100, &cat(&[&vlan_tag(7, 0x86dd), &tcp6()]))),
        ("tso4", tso4),
        ("gso6", gso6),
        ("snapped", snapped),
        (
            "dns_tcp",
            eth(
                0x0800,
                &ipv4(6, &tcp(5353, 40000, tcp_flags::ACK, &[], b"x")),
            ),
        ),
    ]
}

#[test]
fn fast_path_takes_ordinary_tcp_and_nothing_else() {
    let e = LinkType::ETHERNET;
    let mut seeds = fast_seeds();
    seeds.extend(
        corpus()
            .into_iter()
            .filter(|c| c.1 == e)
            .map(|c| (c.0, c.2)),
    );
    let taken: Vec<&str> = seeds
        .iter()
        .filter(|(_, f)| check_fast(e, f))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        taken,
        [
            "eth6",
            "nop_nop_ts",
            "vlan6",
            "tso4",
            "gso6",
            "snapped",
            "eth_padded",
            "vlan",
            "tcp_opts",
            "tcp_sack"
        ]
    );
    // Other link types always take the general path.
    for (name, lt, f) in corpus() {
        assert!(lt == e || !check_fast(lt, &f), "{name}");
    }
}

#[test]
fn fast_path_agrees_on_mutated_frames() {
    // Mutate the headers of frames the fast path takes (and a few it declines), byte by byte
    // and several bytes at a time, truncated or not: wherever it still answers, it must agree
    // with the general decoder. It must also keep answering for most of them (else this test
    // would pass with a fast path that never runs).
    let mut rng = XorShift(7);
    let e = LinkType::ETHERNET;
    let mut seeds = fast_seeds();
    seeds.extend(
        [
            "eth_padded",
            "vlan",
            "tcp_opts",
            "tcp_sack",
            "qinq",
            "v6_ext",
            "v4_opts_frag",
        ]
        .iter()
        .filter_map(|n| corpus().into_iter().find(|c| c.0 == *n))
        .map(|c| (c.0, c.2)),
    );
    let (mut tried, mut taken) = (0u32, 0u32);
    for (_, f) in &seeds {
        let mut g = f.clone();
        for i in 0..f.len().min(120) {
            for v in [0x00, 0xff, f[i] ^ 0x80, f[i] ^ 0x01, f[i].wrapping_add(4)] {
                g[i] = v;
                for n in [g.len(), g.len().saturating_sub(7), i + 1] {
                    tried += 1;
                    taken += u32::from(check_fast(e, &g[..n]));
                }
            }
            g[i] = f[i];
        }
        for _ in 0..3000 {
            let mut g = f.clone();
            for _ in 0..(1 + rng.next() % 3) {
                let i = (rng.next() as usize) % g.len().min(100);
                g[i] = match rng.next() % 4 {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            let n = (rng.next() as usize) % (g.len() + 1);
            tried += 2;
            taken += u32::from(check_fast(e, &g[..n])) + u32::from(check_fast(e, &g));
        }
    }
    assert!(
        taken * 5 > tried,
        "fast path took only {taken} of {tried} mutated frames"
    );
}

#[test]
fn every_prefix_decodes_without_panic() {
    for (name, lt, f) in corpus() {
        for n in 0..=f.len() {
            let d = decode(lt, &f[..n]);
            check(d, &f[..n]);
            check_fast(lt, &f[..n]);
            if n < 4 {
                assert!(matches!(d, Decoded::Malformed(_)), "{name}[..{n}]: {d:?}");
            }
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn random_bytes_for_all_link_types() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = [0u8; 256];
    for _ in 0..20_000 {
        let len = (rng.next() % 257) as usize;
        for b in buf.iter_mut().take(len) {
            *b = rng.next() as u8;
        }
        for lt in ALL_LINKTYPES {
            check(decode(lt, &buf[..len]), &buf[..len]);
            check_fast(lt, &buf[..len]);
        }
    }
}

#[test]
fn mutated_corpus_frames() {
    // Flip, zero and max out single bytes of every valid frame, and mutate a few at a time.
    let mut rng = XorShift(42);
    for (_, lt, f) in corpus() {
        let mut g = f.clone();
        for i in 0..f.len() {
            for v in [
                0x00,
                0xff,
                f[i] ^ 0x80,
                f[i].wrapping_add(1),
                f[i].wrapping_sub(1),
            ] {
                g[i] = v;
                check(decode(lt, &g), &g);
            }
            g[i] = f[i];
        }
        for _ in 0..2000 {
            let mut g = f.clone();
            for _ in 0..(1 + rng.next() % 4) {
                let i = (rng.next() as usize) % g.len();
                g[i] = rng.next() as u8;
            }
            let n = (rng.next() as usize) % (g.len() + 1);
            check(decode(lt, &g[..n]), &g[..n]);
            check(decode(lt, &g), &g);
        }
    }
}

#[test]
fn malformed_names_are_unique() {
    let mut names: Vec<_> = Malformed::ALL.iter().map(|m| m.as_str()).collect();
    for (i, m) in Malformed::ALL.iter().enumerate() {
        assert_eq!(m.index(), i);
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Malformed::ALL.len());
}

// ---------------------------------------------------------------------------------------------
// Real captures (skipped when the shared test data is absent).

/// Frames of a classic pcap file: link type and (timestamp in ns, captured bytes).
fn read_pcap(data: &[u8]) -> (LinkType, Vec<(i64, &[u8])>) {
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => panic!("not a classic pcap file"),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = data[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let lt = LinkType(u32_at(20) & 0x03ff_ffff);
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let sub = i64::from(u32_at(off + 4));
        let ts = i64::from(u32_at(off)) * 1_000_000_000 + if nanos { sub } else { sub * 1000 };
        let caplen = u32_at(off + 8) as usize;
        let start = off + 16;
        let end = (start + caplen).min(data.len());
        frames.push((ts, &data[start..end]));
        off = start + caplen;
    }
    (lt, frames)
}

fn expected_tcp_frames(json: &str) -> usize {
    let at = json
        .find("\"tcp_frames\"")
        .expect("tcp_frames in expected.json");
    json[at + 12..]
        .trim_start_matches([' ', ':'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn shared_captures_tcp_frame_counts() {
    let dir = std::path::Path::new("/work/shared/testdata/captures");
    if !dir.is_dir() {
        eprintln!("skipping: {} not present", dir.display());
        return;
    }
    let cases = [
        ("gre-aruba.pcap", encap::VLAN | encap::GRE | encap::WLAN),
        ("erspan.pcap", encap::GRE),
        ("vxlan-overlapping-http-get.pcap", encap::VXLAN),
        ("llc.pcap", 0),
        ("nflog-http.pcap", 0),
        ("ipv6.pcap", 0),
        ("pubsub.pcap", 0),
        ("resp_3_malicious.pcap", 0),
        ("openjdk-25.0.2-zeek.org.pcap", 0),
        ("timeout-with-pings.pcap", 0),
        ("smtp.pcap", 0),
    ];
    for (name, must_encap) in cases {
        let path = dir.join(name);
        let Ok(data) = std::fs::read(&path) else {
            eprintln!("skipping {name}: not readable");
            continue;
        };
        let json = std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap();
        let (lt, frames) = read_pcap(&data);
        assert!(supports_linktype(lt), "{name}: {}", linktype_name(lt));
        // tshark counts a fragmented datagram in the frame that completes it: reassemble
        // fragments with the engine's reassembly table, as the engine does.
        let mut defrag = crate::defrag::Defrag::default();
        let (mut tcp, mut reassembled_tcp, mut malformed) = (0, 0, 0);
        let mut encap_seen = 0;
        for &(ts, f) in &frames {
            match decode(lt, f) {
                Decoded::Ip(p) if p.transport == Transport::Fragment => {
                    encap_seen |= p.encap;
                    if let Some(dgram) = defrag.push(ts, &p)
                        && let Decoded::Ip(whole) = decode(LinkType::RAW, dgram)
                        && matches!(whole.transport, Transport::Tcp(_))
                    {
                        reassembled_tcp += 1;
                        encap_seen |= whole.encap;
                    }
                }
                Decoded::Ip(p) => {
                    encap_seen |= p.encap;
                    if matches!(p.transport, Transport::Tcp(_)) {
                        tcp += 1;
                    }
                }
                Decoded::Malformed(_) => malformed += 1,
                Decoded::NotIp(_) | Decoded::UnsupportedLinkType(_) => {}
            }
        }
        assert_eq!(
            tcp + reassembled_tcp,
            expected_tcp_frames(&json),
            "{name}: {tcp} + {reassembled_tcp} reassembled"
        );
        assert_eq!(malformed, 0, "{name}");
        assert_eq!(encap_seen & must_encap, must_encap, "{name}");
        if name == "erspan.pcap" {
            assert_eq!(reassembled_tcp, 16, "{name}");
        }
    }
}

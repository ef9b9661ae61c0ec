use super::encode::{Attrs, Msg, element, encode};
use super::*;
use crate::model::port::PortProto;

use crate::bridge::firewall::test_forward as fwd;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn element_layouts_match_nft() {
    // nft --debug=netlink: "element 0100007f 0000911f : 02004d0a 00005100"
    // (words printed in host order) and "element 0000901f : ...".
    let (map, key, value) = element(&fwd(Some([127, 0, 0, 1]), 8081, PortProto::Tcp, [10, 77, 0, 2], 81));
    assert_eq!(
        (map.as_str(), hex(&key).as_str(), hex(&value).as_str()),
        ("fwd_tcp_addr", "7f0000011f910000", "0a4d000200510000")
    );
    let (map, key, _) = element(&fwd(None, 8080, PortProto::Udp, [10, 77, 0, 2], 80));
    assert_eq!((map.as_str(), hex(&key).as_str()), ("fwd_udp_any", "1f90"));
}

const GOLDEN_ADD: &str = concat!(
    // batch begin: len 20, type 0x10, flags REQUEST, seq 7, port 0, family 0, res_id nftables (BE)
    "14000000",
    "1000",
    "0100",
    "07000000",
    "00000000",
    "00",
    "00",
    "000a",
    // NEWSETELEM (0x0a0c), REQUEST|ACK|CREATE, seq 8, family ipv4
    "50000000",
    "0c0a",
    "0504",
    "08000000",
    "00000000",
    "02",
    "00",
    "0000",
    "06000100",
    "7400",
    "0000", // table "t"
    "10000200",
    "6677645f7463705f616e7900", // set "fwd_tcp_any"
    "24000380",
    "20000180", // elements { element {
    "0c000180",
    "06000100",
    "1f90",
    "0000", //   key: 8080
    "10000280",
    "0c000100",
    "0a000002",
    "00500000", //   data: 10.0.0.2 . 80 } }
    // batch end
    "14000000",
    "1100",
    "0100",
    "09000000",
    "00000000",
    "00",
    "00",
    "000a",
);

#[test]
fn an_add_batch_matches_golden_bytes() {
    let r = elements_batch("t", &[(ElemOp::Add, &[fwd(None, 8080, PortProto::Tcp, [10, 0, 0, 2], 80)])], 7);
    assert_eq!(hex(&r.bytes), GOLDEN_ADD);
    assert_eq!(r.acked, [8]);
}

#[test]
fn a_removal_adds_then_deletes_per_map_in_map_order() {
    let fwds = [
        fwd(None, 5353, PortProto::Udp, [10, 0, 0, 2], 53),
        fwd(Some([127, 0, 0, 1]), 8081, PortProto::Tcp, [10, 0, 0, 2], 81),
        fwd(None, 8080, PortProto::Tcp, [10, 0, 0, 2], 80),
    ];
    let r = elements_batch("t", &[(ElemOp::Add, &fwds), (ElemOp::Delete, &fwds)], 1);
    let replies = parse_replies(&r.bytes).unwrap();
    let kinds: Vec<(u16, String)> = replies
        .iter()
        .filter_map(|m| match m {
            Reply::Data { kind, attrs: a, .. } if *kind == NEWSETELEM || *kind == DELSETELEM => {
                let set = attrs(a).find(|(k, _)| *k == 2).unwrap().1;
                Some((*kind, String::from_utf8_lossy(set).trim_end_matches('\0').to_owned()))
            }
            _ => None,
        })
        .collect();
    let names = ["fwd_tcp_addr", "fwd_tcp_any", "fwd_udp_any"];
    let want: Vec<(u16, String)> =
        [NEWSETELEM, DELSETELEM].iter().flat_map(|k| names.iter().map(move |n| (*k, n.to_string()))).collect();
    assert_eq!(kinds, want);
    assert_eq!(r.acked, [2, 3, 4, 5, 6, 7]);
}

#[test]
fn replies_parse_acks_errors_and_a_table_comment() {
    let mut buf = Vec::new();
    // NEWTABLE reply with NAME "t" and USERDATA { comment "v2" }.
    let mut a = Attrs::default();
    a.put_str(1, "t").put(6, &[0, 3, b'v', b'2', 0]);
    buf.extend(encode(&[Msg { kind: NEWTABLE, flags: 0, family: 2, res_id: 0, attrs: a.0 }], 5));
    // an ack of seq 5, and ENOENT for seq 6
    for (seq, code) in [(5u32, 0i32), (6, -2)] {
        buf.extend_from_slice(&36u32.to_ne_bytes());
        buf.extend_from_slice(&MSG_ERROR.to_ne_bytes());
        buf.extend_from_slice(&[0; 2]);
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&code.to_ne_bytes());
        buf.extend_from_slice(&[0; 16]);
    }
    let replies = parse_replies(&buf).unwrap();
    let Reply::Data { kind, attrs, seq } = &replies[0] else { panic!("{replies:?}") };
    assert_eq!((*seq, table_comment(*kind, attrs).as_deref()), (5, Some("v2")));
    assert_eq!(replies[1..], [Reply::Status { seq: 5, errno: 0 }, Reply::Status { seq: 6, errno: 2 }]);
}

#[test]
fn dumped_elements_decode_back_to_forwards() {
    let fwds = [
        fwd(Some([127, 0, 0, 1]), 8081, PortProto::Tcp, [10, 0, 0, 2], 81),
        fwd(Some([10, 1, 0, 1]), 53, PortProto::Tcp, [10, 0, 0, 3], 5353),
    ];
    // A dump reply carries the same attributes as an add request.
    let r = elements_batch("t", &[(ElemOp::Add, &fwds)], 1);
    let replies = parse_replies(&r.bytes).unwrap();
    let Reply::Data { kind, attrs, .. } = &replies[1] else { panic!() };
    assert_eq!(decode_elements("fwd_tcp_addr", *kind, attrs), fwds);
    assert!(decode_elements("fwd_tcp_any", *kind, attrs).is_empty(), "a layout that does not fit is skipped");
}

#[test]
fn a_drop_policy_is_read_from_a_chain_reply() {
    let mut a = Attrs::default();
    a.put_str(3, "FORWARD").put(5, &0u32.to_be_bytes());
    assert_eq!(chain_policy_accepts(&a.0), Some(false));
    let mut b = Attrs::default();
    b.put_str(3, "x");
    assert_eq!(chain_policy_accepts(&b.0), None);
}

#[test]
fn truncated_replies_are_refused_not_misread() {
    let r = get_table(FAMILY_IPV4, "t", 1);
    assert!(parse_replies(&r.bytes[..r.bytes.len() - 1]).is_none());
}

//! Pure nfnetlink (nf_tables) messages for the per-container path: values
//! in, bytes out (and bytes in, values out), golden-tested without root.
//!
//! Only what an attach and a teardown need goes over raw nfnetlink: adding
//! and removing the elements of a network's forward maps, and asking for
//! one table (does it exist, which version built it). Everything else (the
//! table's chains and rules) stays nft script text run through libnftables
//! ([`super::script`]), which happens once per network, not per container.
//! This way a container's firewall work is one `sendmsg` and one `recvmsg`
//! on a socket that costs nothing to open, with no ruleset cache fetch:
//! the cost does not grow with the number of containers.
//!
//! Layouts (as nft 1.0 encodes them, checked against `nft --debug=netlink`):
//! a concatenation pads each field to 4 bytes, so `ipv4_addr .
//! inet_service` is the address (network order), the port (network order)
//! and two zero bytes; a lone `inet_service` key is its 2 bytes.

use super::Forward;
use crate::model::port::PortProto;
use std::net::Ipv4Addr;

/// `NFNL_SUBSYS_NFTABLES`.
const SUBSYS: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN` / `_END`.
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
/// `NFT_MSG_*`.
const NEWTABLE: u16 = 0;
const GETTABLE: u16 = 1;
const GETCHAIN: u16 = 4;
const NEWSETELEM: u16 = 12;
const GETSETELEM: u16 = 13;
const DELSETELEM: u16 = 14;
/// `NLM_F_*`.
const F_REQUEST: u16 = 0x1;
const F_ACK: u16 = 0x4;
const F_CREATE: u16 = 0x400;
/// `NLMSG_ERROR`, `NLMSG_DONE`.
pub const MSG_ERROR: u16 = 2;
/// End of a dump.
pub const MSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
/// `NFPROTO_IPV4`, `NFPROTO_INET`.
pub const FAMILY_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
pub const FAMILY_IPV6: u8 = 10;
/// The `inet` family (firewalld's table).
pub const FAMILY_INET: u8 = 1;

/// One message of a request, before sequence numbers are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    kind: u16,
    flags: u16,
    family: u8,
    res_id: u16,
    attrs: Vec<u8>,
}

/// A netlink attribute writer (type-length-value, 4-byte aligned).
#[derive(Debug, Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }

    fn put_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    fn nest(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

/// Encode `msgs` with sequence numbers from `seq` on.
fn encode(msgs: &[Msg], seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let len = 16 + 4 + m.attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        let kind = if m.kind >= BATCH_BEGIN && m.kind <= BATCH_END { m.kind } else { (SUBSYS << 8) | m.kind };
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&m.flags.to_ne_bytes());
        out.extend_from_slice(&(seq + i as u32).to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.push(m.family);
        out.push(0);
        out.extend_from_slice(&m.res_id.to_be_bytes());
        out.extend_from_slice(&m.attrs);
    }
    out
}

/// A request: its bytes and how many replies (acks or errors) to expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The encoded messages.
    pub bytes: Vec<u8>,
    /// First sequence number used.
    pub first_seq: u32,
    /// Sequence numbers that will be acknowledged (or fail).
    pub acked: Vec<u32>,
    /// The first sequence number after this request's.
    pub next_seq: u32,
}

fn request(msgs: Vec<Msg>, seq: u32) -> Request {
    let acked = msgs.iter().enumerate().filter(|(_, m)| m.flags & F_ACK != 0).map(|(i, _)| seq + i as u32).collect();
    Request { bytes: encode(&msgs, seq), first_seq: seq, acked, next_seq: seq.wrapping_add(msgs.len() as u32) }
}

/// Add (`true`) or delete one batch of map elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemOp {
    /// `add element` (an identical element already there is fine).
    Add,
    /// `delete element`.
    Delete,
}

/// The name of the map holding forwards of `proto`, keyed by address and
/// port (`by_addr`) or by port alone (see [`super::script`]).
pub fn map_name(proto: PortProto, by_addr: bool) -> String {
    format!("fwd_{}_{}", proto.as_str(), if by_addr { "addr" } else { "any" })
}

fn addr_port(ip: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut v = ip.octets().to_vec();
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

/// The map, key and value of one forward.
fn element(f: &Forward) -> (String, Vec<u8>, Vec<u8>) {
    let key = match f.host_ip {
        Some(ip) => addr_port(ip, f.host_port),
        None => f.host_port.to_be_bytes().to_vec(),
    };
    (map_name(f.proto, f.host_ip.is_some()), key, addr_port(f.container_ip, f.container_port))
}

/// One element's key and value bytes.
type KeyValue = (Vec<u8>, Vec<u8>);

fn elems_msg(op: ElemOp, table: &str, map: &str, elems: &[KeyValue]) -> Msg {
    let mut list = Attrs::default();
    for (key, value) in elems {
        let mut elem = Attrs::default();
        elem.nest(1, Attrs::default().put(1, key));
        if op == ElemOp::Add {
            elem.nest(2, Attrs::default().put(1, value));
        }
        list.nest(1, &elem);
    }
    let mut attrs = Attrs::default();
    attrs.put_str(1, table).put_str(2, map).nest(3, &list);
    let (kind, flags) = match op {
        ElemOp::Add => (NEWSETELEM, F_REQUEST | F_ACK | F_CREATE),
        ElemOp::Delete => (DELSETELEM, F_REQUEST | F_ACK),
    };
    Msg { kind, flags, family: FAMILY_IPV4, res_id: 0, attrs: attrs.0 }
}

/// One transaction (a batch) applying `steps` in order to `table`'s maps:
/// each step adds or deletes `fwds`, one message per map that has any.
/// Removal that must not fail on absent elements, nor remove a host port
/// that now forwards elsewhere, is `[(Add, f), (Delete, f)]` (see
/// [`super::script`]).
pub fn elements_batch(table: &str, steps: &[(ElemOp, &[Forward])], seq: u32) -> Request {
    let mut msgs = vec![Msg { kind: BATCH_BEGIN, flags: F_REQUEST, family: 0, res_id: SUBSYS, attrs: Vec::new() }];
    for (op, fwds) in steps {
        let mut maps: Vec<(String, Vec<KeyValue>)> = Vec::new();
        for f in *fwds {
            let (map, key, value) = element(f);
            match maps.iter_mut().find(|(m, _)| *m == map) {
                Some((_, elems)) => elems.push((key, value)),
                None => maps.push((map, vec![(key, value)])),
            }
        }
        maps.sort_by(|a, b| a.0.cmp(&b.0));
        msgs.extend(maps.iter().map(|(map, elems)| elems_msg(*op, table, map, elems)));
    }
    msgs.push(Msg { kind: BATCH_END, flags: F_REQUEST, family: 0, res_id: SUBSYS, attrs: Vec::new() });
    request(msgs, seq)
}

/// Ask for one table (`family` [`FAMILY_IPV4`] or [`FAMILY_INET`]).
pub fn get_table(family: u8, table: &str, seq: u32) -> Request {
    let mut attrs = Attrs::default();
    attrs.put_str(1, table);
    request(vec![Msg { kind: GETTABLE, flags: F_REQUEST | F_ACK, family, res_id: 0, attrs: attrs.0 }], seq)
}

/// Ask for one chain of a table.
pub fn get_chain(family: u8, table: &str, chain: &str, seq: u32) -> Request {
    let mut attrs = Attrs::default();
    attrs.put_str(1, table).put_str(3, chain);
    request(vec![Msg { kind: GETCHAIN, flags: F_REQUEST | F_ACK, family, res_id: 0, attrs: attrs.0 }], seq)
}

/// Dump every element of one map of `table`.
pub fn get_elements(table: &str, map: &str, seq: u32) -> Request {
    let mut attrs = Attrs::default();
    attrs.put_str(1, table).put_str(2, map);
    // NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
    request(
        vec![Msg {
            kind: GETSETELEM,
            flags: F_REQUEST | F_ACK | 0x300,
            family: FAMILY_IPV4,
            res_id: 0,
            attrs: attrs.0,
        }],
        seq,
    )
}

/// The forwards in a `NEWSETELEM` dump reply of map `map` (elements of
/// another layout are skipped: they are not ours to keep).
pub fn decode_elements(map: &str, reply_kind: u16, reply_attrs: &[u8]) -> Vec<Forward> {
    let mut out = Vec::new();
    let Some(proto) =
        [PortProto::Tcp, PortProto::Udp].into_iter().find(|p| map.starts_with(&format!("fwd_{}_", p.as_str())))
    else {
        return out;
    };
    let by_addr = map.ends_with("_addr");
    if reply_kind != NEWSETELEM {
        return out;
    }
    let value_of = |nested: &[u8]| attrs(nested).find(|(k, _)| *k == 1).map(|(_, v)| v.to_vec());
    for (_, list) in attrs(reply_attrs).filter(|(k, _)| *k == 3) {
        for (_, elem) in attrs(list).filter(|(k, _)| *k == 1) {
            let mut key = None;
            let mut data = None;
            for (k, v) in attrs(elem) {
                match k {
                    1 => key = value_of(v),
                    2 => data = value_of(v),
                    _ => {}
                }
            }
            let (Some(key), Some(data)) = (key, data) else { continue };
            let Some((container_ip, container_port)) = split_addr_port(&data) else { continue };
            let (host_ip, host_port) = match (by_addr, key.len()) {
                (true, 8) => match split_addr_port(&key) {
                    Some((ip, port)) => (Some(ip), port),
                    None => continue,
                },
                (false, 2) => (None, u16::from_be_bytes([key[0], key[1]])),
                _ => continue,
            };
            out.push(Forward { host_ip, host_port, proto, container_ip, container_port });
        }
    }
    out
}

fn split_addr_port(b: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let b: [u8; 8] = b.try_into().ok()?;
    Some((Ipv4Addr::new(b[0], b[1], b[2], b[3]), u16::from_be_bytes([b[4], b[5]])))
}

/// One reply message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An ack (`errno` 0) or an error (`errno` > 0) for message `seq`.
    Status {
        /// Sequence number of the request message.
        seq: u32,
        /// 0 for an ack, else the positive errno.
        errno: i32,
    },
    /// A data message: its nf_tables message type and attributes.
    Data {
        /// Sequence number.
        seq: u32,
        /// `NFT_MSG_*` (subsystem stripped).
        kind: u16,
        /// Attribute bytes (after the nfgenmsg header).
        attrs: &'a [u8],
    },
}

/// Split a received buffer into replies; `None` when it is malformed.
pub fn parse_replies(buf: &[u8]) -> Option<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        let body = &rest[16..len];
        out.push(match kind {
            MSG_ERROR => {
                let code = i32::from_ne_bytes(body.get(0..4)?.try_into().ok()?);
                Reply::Status { seq, errno: -code }
            }
            // A dump ends with DONE (carrying its status), not with an ack.
            MSG_DONE => {
                let code = body.get(0..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])));
                Reply::Status { seq, errno: -code }
            }
            _ => Reply::Data { seq, kind: kind & 0xff, attrs: body.get(4..)? },
        });
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    Some(out)
}

/// Iterate over `(type, value)` of the attributes in `buf` (nested flag stripped).
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & !NLA_F_NESTED;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        Some((kind, value))
    })
}

/// The comment of a table (`NFTA_TABLE_USERDATA`, libnftnl's TLV with
/// `NFTNL_UDATA_TABLE_COMMENT` = 0), from a `NEWTABLE` reply's attributes.
pub fn table_comment(reply_kind: u16, table_attrs: &[u8]) -> Option<String> {
    if reply_kind != NEWTABLE {
        return None;
    }
    let udata = attrs(table_attrs).find(|(k, _)| *k == 6)?.1;
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + len)?;
        if kind == 0 {
            return Some(String::from_utf8_lossy(value).trim_end_matches('\0').to_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// A base chain's policy from a chain reply's attributes: `Some(true)`
/// for accept, `Some(false)` for drop, `None` for a regular chain.
pub fn chain_policy_accepts(chain_attrs: &[u8]) -> Option<bool> {
    let policy = attrs(chain_attrs).find(|(k, _)| *k == 5)?.1;
    Some(u32::from_be_bytes(policy.try_into().ok()?) == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

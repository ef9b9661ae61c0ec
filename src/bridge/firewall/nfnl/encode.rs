//! Requests: nf_tables messages in a batch, their attributes, the
//! elements of the forward maps.

use super::{
    BATCH_BEGIN, BATCH_END, DELSETELEM, FAMILY_IPV4, F_ACK, F_CREATE, F_REQUEST, GETCHAIN, GETSETELEM, GETTABLE, NEWSETELEM,
    NLA_F_NESTED, SUBSYS,
};
use crate::bridge::firewall::Forward;
use crate::model::port::PortProto;
use std::net::Ipv4Addr;

/// One message of a request, before sequence numbers are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Msg {
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) family: u8,
    pub(super) res_id: u16,
    pub(super) attrs: Vec<u8>,
}

/// A netlink attribute writer (type-length-value, 4-byte aligned).
#[derive(Debug, Default)]
pub(super) struct Attrs(pub(super) Vec<u8>);

impl Attrs {
    pub(super) fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }

    pub(super) fn put_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    pub(super) fn nest(&mut self, kind: u16, inner: &Attrs) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

/// Encode `msgs` with sequence numbers from `seq` on.
pub(super) fn encode(msgs: &[Msg], seq: u32) -> Vec<u8> {
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
pub(super) fn element(f: &Forward) -> (String, Vec<u8>, Vec<u8>) {
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


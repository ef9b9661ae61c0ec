//! Replies: acks, errors and dumps, split into messages and attributes;
//! forwards, a table's version comment and a chain's policy read back.

use super::{MSG_DONE, MSG_ERROR, NEWSETELEM, NEWTABLE, NLA_F_NESTED};
use crate::bridge::firewall::Forward;
use crate::model::port::PortProto;
use std::net::Ipv4Addr;

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


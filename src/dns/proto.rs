//! The few pieces of the DNS wire format (RFC 1035) the forwarder needs:
//! the header, the question, and building a reply from a query.
//!
//! Pure and total: every function takes untrusted bytes and returns `None`
//! (or a well-formed message) rather than panicking; `tests/fuzz_parsers.rs`
//! feeds them arbitrary input.

use std::net::IpAddr;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Type A.
pub const TYPE_A: u16 = 1;
/// Type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Response code: no such name.
pub const RCODE_NXDOMAIN: u8 = 3;
/// Response code: server failure.
pub const RCODE_SERVFAIL: u8 = 2;
/// Response code: refused.
pub const RCODE_REFUSED: u8 = 5;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;

/// The question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, lowercase, dotted, without the final dot (`""` for the root).
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Offset just past the question in the message.
    pub end: usize,
}

/// The big-endian 16-bit field at `at`, if the message is that long.
pub(crate) fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// The message ID.
pub fn id(msg: &[u8]) -> Option<u16> {
    u16_at(msg, 0)
}

/// Overwrite the message ID (no-op on a message shorter than a header).
pub fn set_id(msg: &mut [u8], id: u16) {
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
}

fn flags(msg: &[u8]) -> Option<u16> {
    u16_at(msg, 2)
}

/// True for a response (QR set).
pub fn is_response(msg: &[u8]) -> bool {
    flags(msg).is_some_and(|f| f & FLAG_QR != 0)
}

/// True for a standard query (QR clear, opcode 0) with a full header.
pub fn is_query(msg: &[u8]) -> bool {
    msg.len() >= HEADER_LEN && flags(msg).is_some_and(|f| f & FLAG_QR == 0 && f & OPCODE_MASK == 0)
}

/// True when the truncated flag (TC) is set.
pub fn is_truncated(msg: &[u8]) -> bool {
    flags(msg).is_some_and(|f| f & FLAG_TC != 0)
}

/// The response code (low four bits of the flags).
pub fn rcode(msg: &[u8]) -> Option<u8> {
    flags(msg).map(|f| (f & 0xf) as u8)
}

/// The single question of `msg` (`None` unless QDCOUNT is 1 and it parses;
/// compression pointers are not allowed in a question).
pub fn question(msg: &[u8]) -> Option<Question> {
    if u16_at(msg, 4)? != 1 {
        return None;
    }
    let mut at = HEADER_LEN;
    let mut name = String::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = msg.get(at..at + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            if b == b'.' || !b.is_ascii_graphic() {
                return None;
            }
            name.push(b.to_ascii_lowercase() as char);
        }
        if name.len() > 253 {
            return None;
        }
        at += len;
    }
    Some(Question { name, qtype: u16_at(msg, at)?, qclass: u16_at(msg, at + 2)?, end: at + 4 })
}

/// The header and question of `query` as the start of a reply: QR and RA
/// set, RD copied, the counts reset to one question and `answers` answers.
fn reply_head(query: &[u8], q: &Question, rcode: u8, answers: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end + 32);
    out.extend_from_slice(&query[..2]);
    let rd = flags(query).unwrap_or(0) & FLAG_RD;
    out.extend_from_slice(&(FLAG_QR | FLAG_RA | rd | u16::from(rcode & 0xf)).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[HEADER_LEN..q.end]);
    out
}

/// An error reply (`rcode`) to `query`; `None` if it has no parsable question.
pub fn error_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let q = question(query)?;
    Some(reply_head(query, &q, rcode, 0))
}

/// A reply to `query` with the addresses of the question's type among
/// `addrs` (A for IPv4, AAAA for IPv6; none of that type: an empty, NOERROR
/// answer) and `ttl` seconds to live.
pub fn address_reply(query: &[u8], addrs: &[IpAddr], ttl: u32) -> Option<Vec<u8>> {
    let q = question(query)?;
    let matching: Vec<&IpAddr> = addrs
        .iter()
        .filter(|a| {
            q.qclass == CLASS_IN && matches!((a, q.qtype), (IpAddr::V4(_), TYPE_A) | (IpAddr::V6(_), TYPE_AAAA))
        })
        .collect();
    let count = u16::try_from(matching.len()).ok()?;
    let mut out = reply_head(query, &q, 0, count);
    for a in matching {
        // The name is a pointer to the question's, at offset 12.
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        let (ty, data): (u16, Vec<u8>) = match a {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

/// Whether `reply` answers `query`: same question (names compared without
/// regard to case), and a response.
pub fn answers(query: &Question, reply: &[u8]) -> bool {
    is_response(reply)
        && question(reply).is_some_and(|r| r.name == query.name && r.qtype == query.qtype && r.qclass == query.qclass)
}

/// A standard query (RD set) for `name` of `qtype` with ID `id`, for tests.
#[cfg(test)]
pub(crate) fn test_query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        test_query(name, qtype, 0x1234)
    }

    #[test]
    fn question_is_read_lowercase_with_its_end() {
        let q = query("Web.Example.TEST", TYPE_A);
        let parsed = question(&q).unwrap();
        assert_eq!(parsed, Question { name: "web.example.test".into(), qtype: TYPE_A, qclass: CLASS_IN, end: q.len() });
        assert!(is_query(&q) && !is_response(&q) && !is_truncated(&q));
        assert_eq!(id(&q), Some(0x1234));
    }

    #[test]
    fn golden_a_reply_uses_a_name_pointer_and_keeps_rd() {
        let q = query("db.test", TYPE_A);
        let r = address_reply(&q, &["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()], 30).unwrap();
        let mut expect = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        expect.extend_from_slice(&q[12..]);
        expect.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 5]);
        assert_eq!(r, expect);
        assert!(answers(&question(&q).unwrap(), &r));
    }

    #[test]
    fn aaaa_query_for_an_ipv4_only_name_is_an_empty_noerror_answer() {
        let q = query("db.test", TYPE_AAAA);
        let r = address_reply(&q, &["10.0.0.5".parse().unwrap()], 30).unwrap();
        assert_eq!(rcode(&r), Some(0));
        assert_eq!(&r[6..8], &[0, 0]);
    }

    #[test]
    fn servfail_keeps_the_id_and_question() {
        let q = query("x.test", TYPE_A);
        let r = error_reply(&q, RCODE_SERVFAIL).unwrap();
        assert_eq!(r.len(), q.len());
        assert_eq!((id(&r), rcode(&r), is_response(&r)), (Some(0x1234), Some(2), true));
    }

    #[test]
    fn malformed_messages_are_refused_not_panicked_on() {
        assert!(question(&[]).is_none());
        assert!(question(&[0; 12]).is_none());
        let mut pointer = query("a.test", TYPE_A);
        pointer[12] = 0xc0;
        assert!(question(&pointer).is_none());
        let mut cut = query("a.test", TYPE_A);
        cut.truncate(cut.len() - 1);
        assert!(question(&cut).is_none());
        assert!(!is_query(&[0; 5]));
        let mut other_q = query("b.test", TYPE_A);
        other_q[2] |= 0x80;
        assert!(!answers(&question(&query("a.test", TYPE_A)).unwrap(), &other_q));
    }
}

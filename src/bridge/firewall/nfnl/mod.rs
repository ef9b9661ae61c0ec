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
//!
//! [`encode`] builds the requests, [`decode`] reads the replies.

mod decode;
mod encode;

pub use decode::{Reply, attrs, chain_policy_accepts, decode_elements, parse_replies, table_comment};
pub use encode::{ElemOp, Request, elements_batch, get_chain, get_elements, get_table, map_name};

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


#[cfg(test)]
mod tests;

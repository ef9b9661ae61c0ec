//! How a CNI attachment is named in the state the CLI shares.
//!
//! A CNI attachment is an ordinary record of the runtime directory
//! (`<run>/runs/<id>.json`, a `state::record::Record`), written and
//! undone by the same steps as `pelagos-net attach`: `ps` lists it,
//! `inspect` shows it, `gc` sees it. Two things set it apart:
//!
//! - Its id is derived from (network, `CNI_CONTAINERID`, `CNI_IFNAME`)
//!   ([`attachment_id`]), so `DEL`, `CHECK` and a repeated `ADD` find it
//!   without listing the directory, and the host end of its veth pair
//!   (`pv` + 12 digits of the id, as every attachment's) is known from the
//!   attachment alone.
//! - Decision (liveness): it has no owner process (the plugin exits after
//!   every call and the container runtime owns the lifecycle), so it is
//!   anchored to the runtime (`Anchor::Runtime`):
//!   plain `pelagos-net gc` leaves a ready one alone; CNI `DEL` undoes it,
//!   and CNI `GC` every one the runtime's list of valid attachments leaves
//!   out. An `ADD` killed half-way leaves a record in its setup phase whose
//!   owner is dead: any `gc` finishes that.

/// FNV-1a, 64 bits, over `parts` separated by a zero byte.
fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        let sep: &[u8] = if i > 0 { &[0] } else { &[] };
        for b in sep.iter().chain(p.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The record id of the attachment of `container_id` as `ifname` to
/// `network`: 16 hex digits (random run ids have 12).
pub fn attachment_id(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{:016x}", fnv64(&[network, container_id, ifname]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_ids_are_stable_hex_and_distinct() {
        let id = attachment_id("web", "c1", "eth0");
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, attachment_id("web", "c1", "eth0"));
        assert_ne!(id, attachment_id("web", "c1", "eth1"));
        assert_ne!(id, attachment_id("db", "c1", "eth0"));
        assert_ne!(attachment_id("web", "c1e", "th0"), id);
    }
}

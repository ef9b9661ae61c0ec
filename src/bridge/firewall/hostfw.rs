//! The host's own firewall: forwarding through a host whose iptables
//! `FORWARD` chain drops by default (as docker leaves it), and firewalld.
//!
//! An accept in our table cannot override a drop in another table's base
//! chain at the same hook, so on such a host our bridges forward nothing
//! unless the host's chain accepts their traffic. When `table ip filter`
//! (iptables-nft) has a `FORWARD` chain whose policy is drop, we insert two
//! rules at its top with the `iptables` binary (the table belongs to
//! iptables; native nft rules in it would break `iptables` for docker):
//!
//! ```text
//! -A FORWARD -i <bridge> -m comment --comment "pelagos-net <network>" -j ACCEPT
//! -A FORWARD -o <bridge> -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment "pelagos-net <network>" -j ACCEPT
//! ```
//!
//! Checked with one netlink request per attach (the chain's policy); the
//! `iptables` commands run once per network (a marker file under the run
//! directory remembers it), not per container. firewalld is detected
//! (its `inet firewalld` table) and reported by `doctor` with the command
//! to run; it is never reconfigured behind the administrator's back.

use super::Firewall;
use std::path::Path;
use std::process::{Command, Stdio};

/// What stands between our bridges and forwarding on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostFirewall {
    /// Nothing: forwarded traffic is accepted.
    Open,
    /// iptables' `FORWARD` chain drops by default.
    ForwardDrop,
    /// firewalld is active.
    Firewalld,
}

/// What a plan of a setup on `network` (bridge `bridge`) says about
/// `found`: what the setup will do about it, or what to run; `None` when
/// nothing stands in the way. `doctor` says the same of the host.
pub fn plan_warning(found: &HostFirewall, network: &str, bridge: &str) -> Option<String> {
    match found {
        HostFirewall::Open => None,
        HostFirewall::ForwardDrop => Some(format!(
            "the host's iptables FORWARD policy is DROP (as docker leaves it): the setup lets bridge {bridge} \
             through with `{}` (once per network; without iptables, {bridge} forwards nothing)",
            accept_commands(network, bridge).join(" && ")
        )),
        HostFirewall::Firewalld => Some(format!(
            "firewalld is active: its forward chain may reject traffic of bridge {bridge}; run \
             `firewall-cmd --permanent --zone=trusted --add-interface={bridge} && firewall-cmd --reload`"
        )),
    }
}

/// Probe the calling thread's namespace (two netlink requests).
pub fn probe(fw: &mut Firewall) -> HostFirewall {
    if fw.inet_table_exists("firewalld").unwrap_or(false) {
        return HostFirewall::Firewalld;
    }
    match fw.chain_policy_accepts("filter", "FORWARD") {
        Ok(Some(false)) => HostFirewall::ForwardDrop,
        _ => HostFirewall::Open,
    }
}

/// The two rules for `bridge`, as `iptables` arguments after `-I FORWARD 1`
/// (or `-C FORWARD`, `-D FORWARD`).
pub fn accept_rules(network: &str, bridge: &str) -> [Vec<String>; 2] {
    let comment = format!("pelagos-net {network}");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut a = s(&["-i", bridge, "-m", "comment", "--comment"]);
    a.push(comment.clone());
    a.extend(s(&["-j", "ACCEPT"]));
    let mut b =
        s(&["-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-m", "comment", "--comment"]);
    b.push(comment);
    b.extend(s(&["-j", "ACCEPT"]));
    [a, b]
}

/// The commands that let `bridge` forward through a `FORWARD DROP` host,
/// for `doctor` and error messages.
pub fn accept_commands(network: &str, bridge: &str) -> Vec<String> {
    accept_rules(network, bridge)
        .iter()
        .map(|r| {
            let args: Vec<String> =
                r.iter().map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a.clone() }).collect();
            format!("iptables -I FORWARD 1 {}", args.join(" "))
        })
        .collect()
}

fn iptables(args: &[&str], rule: &[String]) -> std::io::Result<bool> {
    let status = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .args(rule)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// Make `bridge` forward on a host whose `FORWARD` policy is drop (see the
/// module docs). `marker` remembers that the rules were inserted. Returns
/// what it found; an `Err` is the reason the rules could not be inserted.
pub fn allow_forwarding(fw: &mut Firewall, network: &str, bridge: &str, marker: &Path) -> Result<HostFirewall, String> {
    let found = probe(fw);
    if found != HostFirewall::ForwardDrop || marker.exists() {
        return Ok(found);
    }
    for rule in accept_rules(network, bridge) {
        let present = iptables(&["-C", "FORWARD"], &rule).map_err(|e| format!("run iptables: {e}"))?;
        if !present && !iptables(&["-I", "FORWARD", "1"], &rule).map_err(|e| format!("run iptables: {e}"))? {
            return Err(format!("iptables refused: {}", accept_commands(network, bridge).join("; ")));
        }
    }
    std::fs::write(marker, b"").map_err(|e| format!("write {}: {e}", marker.display()))?;
    Ok(found)
}

/// Remove the rules [`allow_forwarding`] inserted (network removal); absent
/// rules are fine.
pub fn remove_forwarding(network: &str, bridge: &str, marker: &Path) {
    for rule in accept_rules(network, bridge) {
        while iptables(&["-D", "FORWARD"], &rule).unwrap_or(false) {}
    }
    let _ = std::fs::remove_file(marker);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_commands_name_the_bridge_and_the_network() {
        assert_eq!(
            accept_commands("web", "pn-web"),
            [
                "iptables -I FORWARD 1 -i pn-web -m comment --comment \"pelagos-net web\" -j ACCEPT",
                "iptables -I FORWARD 1 -o pn-web -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment \"pelagos-net web\" -j ACCEPT",
            ]
        );
    }
}

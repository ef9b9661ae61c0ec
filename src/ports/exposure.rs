//! Which published ports listen on every interface of the host, and the one
//! warning a run prints about them.
//!
//! A port published without a host address (`-p 8080:80`) binds all
//! interfaces, as docker and podman do: anyone who can reach the host can
//! reach the command. That stays the default (it is what people expect from
//! `-p`), but a run says so once, naming the ports and the local form.
//! Pure: the plan carries the warning and the caller prints it.

use crate::model::port::PortMapping;

/// The warning for `ports`, or `None` when every port names a host address.
pub fn all_interfaces_warning(ports: &[PortMapping]) -> Option<String> {
    let open: Vec<&PortMapping> = ports.iter().filter(|m| m.host_ip.is_none()).collect();
    let first = open.first()?;
    let list: Vec<String> = open.iter().map(|m| m.to_string()).collect();
    let local = PortMapping { host_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()), ..(*first).clone() };
    Some(format!(
        "published on all interfaces of this host (reachable from other machines): {}; \
         to publish on loopback only, give the host address, e.g. -p {local}",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(specs: &[&str]) -> Vec<PortMapping> {
        specs.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ports_without_a_host_address_are_named_with_the_local_form() {
        let w = all_interfaces_warning(&ports(&["8080:80", "127.0.0.1:9090:90", "5353:53/udp"])).unwrap();
        assert!(w.contains("8080:80/tcp, 5353:53/udp"), "{w}");
        assert!(!w.contains("9090"), "{w}");
        assert!(w.contains("-p 127.0.0.1:8080:80/tcp"), "{w}");
    }

    #[test]
    fn ports_bound_to_an_address_need_no_warning() {
        assert_eq!(all_interfaces_warning(&ports(&["127.0.0.1:8080:80", "[::1]:53:53/udp"])), None);
        assert_eq!(all_interfaces_warning(&[]), None);
    }
}

//! Links: look-up, bridge and veth creation, up, master, deletion, listing.

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, BridgePortState, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData,
    InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as Info, LinkMessage, LinkProtoInfoBridge,
};
use nix::errno::Errno;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::{LinkInfo, LinkState, Netlink, NetlinkError};

/// A random, locally administered unicast MAC address.
fn bridge_mac() -> [u8; 6] {
    use std::io::Read;
    let mut mac = [0u8; 6];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac)).is_err() {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let mixed = (seed as u64) ^ (u64::from(std::process::id()) << 20);
        mac.copy_from_slice(&mixed.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

fn named(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg
}

/// One transmit and one receive queue, asked for explicitly. A veth
/// created without `IFLA_NUM_TX_QUEUES`/`IFLA_NUM_RX_QUEUES` gets one queue
/// per possible CPU and is then cut down to one active queue while
/// registered, and that cut waits for an expedited RCU grace period, once
/// per end (kernel 6.x `veth_init_queues`): 0.2-2.5 ms of every veth
/// pair's creation here, more under load. Created with one queue, nothing
/// is cut; the active queue count is one either way.
fn one_queue(msg: &mut LinkMessage) {
    msg.attributes.push(LinkAttribute::NumTxQueues(1));
    msg.attributes.push(LinkAttribute::NumRxQueues(1));
}

/// `IFLA_AF_SPEC` asking for no IPv6 address of the kernel's making
/// (`IN6_ADDR_GEN_MODE_NONE`): the link gets no link-local address when it
/// goes up, so it sends no duplicate address detection, no router
/// solicitation and no MLD report. Such multicast from a container end
/// is flooded by the bridge to every other port and received by every
/// other container's IPv6 stack, partly while the sender holds the RTNL
/// lock (`addrconf_dad_work`): work that grows with the number of
/// containers on the bridge and stalls every attach meanwhile. Only
/// honoured before the link goes up (an address made at up stays).
fn no_ipv6_autoconf(msg: &mut LinkMessage) {
    msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])]));
}

/// The kernel has no IPv6 for this link (IPv6 off at boot, or an MTU
/// below 1280): it makes no address either.
fn no_ipv6(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// `IFLA_LINKINFO` setting bridge port option `option`.
fn port_options(msg: &mut LinkMessage, option: InfoBridgePort) {
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        Info::PortKind(InfoPortKind::Bridge),
        Info::PortData(InfoPortData::BridgePort(vec![option])),
    ]));
}

/// `IFLA_BRPORT_STATE` (`linux/if_link.h`), inside `IFLA_PROTINFO`.
const IFLA_BRPORT_STATE: u16 = 1;

fn indexed(ifindex: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg
}

/// An `ifreq` naming link `name` (refused when too long for one).
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(Errno::EINVAL.into());
    }
    // SAFETY: ifreq is a plain C struct for which all-zero bytes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    Ok(ifr)
}

/// One interface ioctl (`SIOCGIF*`) on `fd`, in its socket's namespace
/// (a netlink socket passes them to the device layer); `ifr` as filled.
fn if_ioctl(fd: BorrowedFd<'_>, request: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<libc::ifreq> {
    // SAFETY: a read-only interface ioctl: it reads the name and writes
    // one field of the ifreq we own; the fd is a valid socket.
    match unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut *ifr) } {
        0 => Ok(*ifr),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `SIOCGIFINDEX` for the link `ifr` names: `None` when there is none.
fn ioctl_index(fd: BorrowedFd<'_>, ifr: &mut libc::ifreq) -> io::Result<Option<u32>> {
    match if_ioctl(fd, libc::SIOCGIFINDEX as libc::Ioctl, ifr) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        // SAFETY: after SIOCGIFINDEX the union holds ifru_ifindex.
        other => Ok(Some(unsafe { other?.ifr_ifru.ifru_ifindex } as u32)),
    }
}

fn link_info(msg: LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::Controller(master) => info.master = Some(master),
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.into_iter().find_map(|i| match i {
                    Info::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    info
}

impl Netlink {
    /// Index of the link called `name`, or `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let err = |source| NetlinkError::LinkIndex { name: name.to_owned(), source };
        let mut ifr = ifreq(name).map_err(err)?;
        ioctl_index(self.as_fd(), &mut ifr).map_err(err)
    }

    /// Index, up, hardware address and MTU of the link called `name`, or
    /// `None` if there is none, over the interface ioctls on this socket
    /// (`SIOCGIFINDEX`, `SIOCGIFFLAGS`, `SIOCGIFHWADDR`, `SIOCGIFMTU`, in
    /// its namespace): four small calls instead of an `RTM_GETLINK` whose
    /// answer, for a bridge about 1.5 KB of attributes (its options, every
    /// address family's settings), costs more to fill and decode than all
    /// four.
    pub fn link_brief(&mut self, name: &str) -> Result<Option<LinkState>, NetlinkError> {
        let err = |source| NetlinkError::LinkIndex { name: name.to_owned(), source };
        let mut ifr = ifreq(name).map_err(err)?;
        let fd = self.as_fd();
        let Some(index) = ioctl_index(fd, &mut ifr).map_err(err)? else { return Ok(None) };
        // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
        let flags = unsafe { if_ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut ifr).map_err(err)?.ifr_ifru.ifru_flags };
        // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
        let hw = unsafe { if_ioctl(fd, libc::SIOCGIFHWADDR as libc::Ioctl, &mut ifr).map_err(err)?.ifr_ifru.ifru_hwaddr };
        // SAFETY: after SIOCGIFMTU the union holds ifru_mtu.
        let mtu = unsafe { if_ioctl(fd, libc::SIOCGIFMTU as libc::Ioctl, &mut ifr).map_err(err)?.ifr_ifru.ifru_mtu };
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *dst = *src as u8;
        }
        Ok(Some(LinkState { index, up: flags & libc::IFF_UP as libc::c_short != 0, mac, mtu: mtu as u32 }))
    }

    /// The index of a link this socket just created: gone again is `ENODEV`.
    fn created_index(&mut self, name: &str) -> io::Result<u32> {
        ioctl_index(self.as_fd(), &mut ifreq(name)?)?.ok_or_else(|| Errno::ENODEV.into())
    }

    /// Create a bridge called `name` (down) and return its index.
    ///
    /// Fails with `EEXIST` ([`NetlinkError::is_exists`]) if a link of that name exists.
    pub fn create_bridge(&mut self, name: &str) -> Result<u32, NetlinkError> {
        let mut msg = named(name);
        // A bridge without an address of its own takes its lowest port's,
        // and changes it when that port leaves: every container's cached
        // neighbour entry for the gateway would then point nowhere until it
        // expires (lookups to the gateway time out). An address set at
        // creation is kept.
        msg.attributes.push(LinkAttribute::Address(bridge_mac().to_vec()));
        // No multicast snooping: on every port's join the kernel re-arms
        // the query timers of every other port, which made the 200th
        // attach cost 1.17x the first instead of 1.08x (median of 4 runs,
        // bench/cni). With no querier on a container bridge, snooping only
        // saved the flooding of groups someone had joined.
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            Info::Kind(InfoKind::Bridge),
            Info::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .and_then(|_| self.created_index(name))
            .map_err(|source| NetlinkError::CreateBridge { name: name.to_owned(), source })
    }

    /// Create a veth pair: `host` in this socket's namespace and `peer`
    /// created directly inside `peer_netns` (`IFLA_NET_NS_FD` in the peer's
    /// message), so no link is ever moved. With `master`, the host side is
    /// enslaved in the same request (`IFLA_MASTER`): the kernel creates it
    /// enslaved or not at all. Both ends are created down. Returns the host
    /// side's index.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        master: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        self.create_veth_mtu(host, peer, peer_netns, master, None).map(|s| s.index)
    }

    /// [`Self::create_veth`] with both ends' MTU set in the same request;
    /// returns the host side's index, hardware address and MTU (looked up
    /// with [`Self::link_brief`]: cheaper than decoding the kernel's echo
    /// of the creation, `NLM_F_ECHO`).
    pub fn create_veth_mtu(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        master: Option<u32>,
        mtu: Option<u32>,
    ) -> Result<LinkState, NetlinkError> {
        let mut peer_msg = named(peer);
        if let Some(mtu) = mtu {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        one_queue(&mut peer_msg);
        // The borrow keeps the namespace fd open for the whole request.
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut msg = named(host);
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        one_queue(&mut msg);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            Info::Kind(InfoKind::Veth),
            Info::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        let create_err = |source| NetlinkError::CreateVeth { host: host.to_owned(), peer: peer.to_owned(), source };
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL).map_err(create_err)?;
        self.link_brief(host)?.ok_or_else(|| create_err(Errno::ENODEV.into()))
    }

    /// Set link `ifindex` administratively up.
    pub fn set_up(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        let mut msg = indexed(ifindex);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|source| NetlinkError::SetUp { ifindex, source })
    }

    /// Bring bridge port `ifindex` (the host end of a veth pair, created
    /// down) up, in one request: with no IPv6 address of its own (a bridge
    /// port uses none; see [`no_ipv6_autoconf`]) and, with `hairpin`, in
    /// hairpin mode (frames may leave by the port they came in on: a
    /// container reaching itself through a published port of the host).
    ///
    /// The request is an `RTM_NEWLINK` without `NLM_F_CREATE` on the
    /// existing link: only that one applies bridge port options
    /// (`IFLA_INFO_SLAVE_DATA`); an `RTM_SETLINK` carrying them is
    /// accepted and ignored. The kernel applies the up flag before
    /// `IFLA_AF_SPEC`, which is in time: a veth whose peer is still down
    /// has no carrier, and no link-local address is made before it has.
    pub fn set_port_up(&mut self, ifindex: u32, hairpin: bool) -> Result<(), NetlinkError> {
        let request = |ipv6: bool| {
            let mut msg = indexed(ifindex);
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
            if ipv6 {
                no_ipv6_autoconf(&mut msg);
            }
            if hairpin {
                port_options(&mut msg, InfoBridgePort::HairpinMode(true));
            }
            RouteNetlinkMessage::NewLink(msg)
        };
        match self.request(request(true), 0) {
            Err(e) if no_ipv6(&e) => self.request(request(false), 0),
            done => done,
        }
        .map(drop)
        .map_err(|source| NetlinkError::SetUp { ifindex, source })
    }

    /// No IPv6 address of the kernel's making on link `ifindex` (see
    /// [`no_ipv6_autoconf`]); to be called while the link is down. A link
    /// without IPv6 already is left as it is.
    pub fn set_no_ipv6_autoconf(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        let mut msg = indexed(ifindex);
        no_ipv6_autoconf(&mut msg);
        match self.request(RouteNetlinkMessage::SetLink(msg), 0) {
            Err(e) if no_ipv6(&e) => Ok(()),
            done => done.map(drop).map_err(|source| NetlinkError::SetLinkOptions { ifindex, source }),
        }
    }

    /// Enslave link `ifindex` to `master` (a bridge).
    pub fn set_master(&mut self, ifindex: u32, master: u32) -> Result<(), NetlinkError> {
        let mut msg = indexed(ifindex);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop).map_err(|source| NetlinkError::SetMaster {
            ifindex,
            master,
            source,
        })
    }

    /// Cut bridge port `ifindex` off its bridge at once (port state
    /// `disabled`: the bridge drops what the port sends and sends nothing
    /// to it), without the RCU waits of removing it. Fails with `ENETDOWN`
    /// when the link is down and `EBUSY` when the bridge runs kernel STP.
    ///
    /// Sent as the bridge's own request (`RTM_SETLINK` of family
    /// `AF_BRIDGE`, `IFLA_PROTINFO`, as `bridge link set state 0`): the
    /// generic link request applies the state but then announces a link
    /// change, on which the bridge enables a disabled port with carrier
    /// again at once.
    pub fn disable_port(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        let mut msg = indexed(ifindex);
        msg.header.interface_family = AddressFamily::Bridge;
        msg.attributes.push(LinkAttribute::ProtoInfoBridge(vec![LinkProtoInfoBridge::Other(DefaultNla::new(
            IFLA_BRPORT_STATE,
            vec![u8::from(BridgePortState::Disabled)],
        ))]));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|source| NetlinkError::SetLinkOptions { ifindex, source })
    }

    /// Set the MTU of link `ifindex`.
    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = indexed(ifindex);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop).map_err(|source| NetlinkError::SetMtu {
            ifindex,
            mtu,
            source,
        })
    }

    /// Delete link `ifindex`. Deleting either end of a veth pair deletes both.
    pub fn delete_link(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelLink(indexed(ifindex)), 0)
            .map(drop)
            .map_err(|source| NetlinkError::DeleteLink { ifindex, source })
    }

    /// Delete the link `ifindex`; one gone meanwhile (its namespace died
    /// and took it, as a dead holder's veth peers go) is no error.
    pub fn delete_link_if_present(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        match self.delete_link(ifindex) {
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(()),
            done => done,
        }
    }

    /// Delete the link called `name`, if there is one (absent, or gone
    /// meanwhile, is no error: see [`Self::delete_link_if_present`]).
    pub fn delete_link_named(&mut self, name: &str) -> Result<(), NetlinkError> {
        match self.link_index(name)? {
            Some(index) => self.delete_link_if_present(index),
            None => Ok(()),
        }
    }

    /// Every link of this namespace: index, name, kind, master, up.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|source| NetlinkError::ListLinks { source })?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_info(link)),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_info_reads_name_kind_master_and_up() {
        let mut msg = indexed(7);
        msg.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        msg.attributes.push(LinkAttribute::IfName("veth0".into()));
        msg.attributes.push(LinkAttribute::Controller(3));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![Info::Kind(InfoKind::Veth)]));

        let info = link_info(msg);

        assert_eq!(
            info,
            LinkInfo { index: 7, name: "veth0".into(), kind: Some("veth".into()), master: Some(3), up: true }
        );
    }

    #[test]
    fn link_info_of_plain_device_has_no_kind_or_master() {
        let mut msg = indexed(1);
        msg.attributes.push(LinkAttribute::IfName("lo".into()));

        let info = link_info(msg);

        assert_eq!(info, LinkInfo { index: 1, name: "lo".into(), kind: None, master: None, up: false });
    }
}

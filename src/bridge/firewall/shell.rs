//! [`Firewall`]: the nftables side of bridge networks in one network
//! namespace. A container's forwards go over raw nfnetlink
//! ([`NfSocket`], one transaction, no ruleset fetch); a network's table is
//! built from [`script`](super::script) text by the build's
//! [`NftEngine`] (libnftables, or the `nft` command in a static build),
//! opened only when a table is created, rebuilt or deleted.

use super::ipv6::{Network6Rules, delete_table6_script, table6_script};
use super::nfnl::{ElemOp, FAMILY_IPV4, FAMILY_IPV6};
use super::nfsock::NfSocket;
use super::script::{delete_table_script, rebuild_script, table_comment, table_name, table_script};
use super::engine::{Nft, NftEngine};
use super::{FirewallError, Forward, NetworkRules, NftError};

/// The state of a network's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    /// No such table.
    Missing,
    /// Built by this version.
    Current,
    /// Built by another version (its comment, if any).
    Outdated(Option<String>),
}

/// The nftables side of bridge networks, in one network namespace: the
/// namespace of the thread that called [`Firewall::new`], whichever thread
/// uses it afterwards.
#[derive(Debug)]
pub struct Firewall {
    sock: NfSocket,
    engine: NftEngine,
    nft: Option<Nft>,
}

impl Firewall {
    /// A firewall for the calling thread's network namespace, running
    /// scripts with this build's engine ([`NftEngine::BUILT_IN`]). Opens one
    /// netlink socket; the engine is opened only when a table must be built
    /// (in the namespace of the thread that first needs it, so build a
    /// `Firewall` on the thread that is in it).
    pub fn new() -> Result<Self, FirewallError> {
        Self::with_engine(NftEngine::BUILT_IN)
    }

    /// [`Self::new`] with scripts run by `engine`.
    pub fn with_engine(engine: NftEngine) -> Result<Self, FirewallError> {
        let sock = NfSocket::open().map_err(|source| FirewallError::Open { source })?;
        Ok(Self { sock, engine, nft: None })
    }

    fn nft(&mut self) -> Result<&mut Nft, FirewallError> {
        if self.nft.is_none() {
            self.nft = Some(Nft::open(self.engine).map_err(|source| FirewallError::Open { source })?);
        }
        Ok(self.nft.as_mut().expect("set above"))
    }

    /// Creates network `net`'s table, or brings its rules up to date,
    /// keeping every published port. Idempotent: any number of calls leave
    /// one copy of each rule. One transaction.
    pub fn ensure_network(&mut self, net: &NetworkRules) -> Result<(), FirewallError> {
        let err = |source| FirewallError::EnsureNetwork { network: net.name.clone(), source };
        self.nft()?.run(&table_script(net)).map(drop).map_err(err)
    }

    /// Creates or refreshes a dual-stack network's IPv6 table (one transaction).
    pub fn ensure_network6(&mut self, net: &Network6Rules) -> Result<(), FirewallError> {
        let err = |source| FirewallError::EnsureNetwork { network: net.name.clone(), source };
        self.nft()?.run(&table6_script(net)).map(drop).map_err(err)
    }

    /// Deletes network `net`'s IPv6 table; an absent one is not an error.
    pub fn delete_network6(&mut self, net: &str) -> Result<(), FirewallError> {
        let err = |source| FirewallError::DeleteNetwork { network: net.into(), source };
        self.nft()?.run(&delete_table6_script(net)).map(drop).map_err(err)
    }

    /// Whether network `net`'s IPv6 table exists (one netlink round trip).
    pub fn table6_exists(&mut self, net: &str) -> Result<bool, FirewallError> {
        self.sock
            .table_comment(FAMILY_IPV6, &table_name(net))
            .map(|t| t.is_some())
            .map_err(|source| FirewallError::ListTable { network: net.into(), source })
    }

    /// Whether network `net`'s table exists and was built by this version.
    /// One netlink round trip, no ruleset fetch.
    pub fn table_state(&mut self, net: &str) -> Result<TableState, FirewallError> {
        let found = self
            .sock
            .table_comment(FAMILY_IPV4, &table_name(net))
            .map_err(|source| FirewallError::ListTable { network: net.into(), source })?;
        Ok(match found {
            None => TableState::Missing,
            Some(Some(c)) if c == table_comment() => TableState::Current,
            Some(other) => TableState::Outdated(other),
        })
    }

    /// Makes network `net`'s table current: created when missing, rebuilt
    /// (forwards kept, one transaction) when another version built it,
    /// left alone when current. Returns the state it found.
    pub fn converge_network(&mut self, net: &NetworkRules) -> Result<TableState, FirewallError> {
        let state = self.table_state(&net.name)?;
        match &state {
            TableState::Current => {}
            TableState::Missing => self.ensure_network(net)?,
            TableState::Outdated(_) => {
                let err = |source| FirewallError::EnsureNetwork { network: net.name.clone(), source };
                let kept = self.sock.forwards(&table_name(&net.name)).map_err(err)?;
                log::info!("network {}: rebuilding its nftables table ({} forwards kept)", net.name, kept.len());
                self.nft()?.run(&rebuild_script(net, &kept)).map(drop).map_err(err)?;
            }
        }
        Ok(state)
    }

    /// Publishes `fwds` in network `net`, all or none (one transaction).
    ///
    /// Re-adding a forward that is already there is a no-op; a host port
    /// (with the same host address and protocol) already forwarded to a
    /// different container fails the whole call, as does an absent table.
    pub fn add_forwards(&mut self, net: &str, fwds: &[Forward]) -> Result<(), FirewallError> {
        self.sock
            .elements(&table_name(net), &[(ElemOp::Add, fwds)])
            .map_err(|source| FirewallError::AddForwards { network: net.into(), source })
    }

    /// Withdraws `fwds` from network `net`. Made for teardown, so it removes
    /// what it can and succeeds when there is nothing left to remove:
    ///
    /// - an absent forward, map entry or table is not an error;
    /// - a host port that now forwards to a *different* container is not
    ///   this caller's any more: it is left in place (logged), not an error.
    ///
    /// The common case is one transaction (each element added, then
    /// deleted: see [`super::script`]). When it fails, each forward is
    /// retried alone, and the error lists only the forwards that could not
    /// be removed for another reason.
    pub fn remove_forwards(&mut self, net: &str, fwds: &[Forward]) -> Result<(), FirewallError> {
        let table = table_name(net);
        if fwds.is_empty() || self.sock.elements(&table, &[(ElemOp::Add, fwds), (ElemOp::Delete, fwds)]).is_ok() {
            return Ok(());
        }
        if self.table_state(net)? == TableState::Missing {
            return Ok(());
        }
        let mut failed = Vec::new();
        for fwd in fwds {
            let one = std::slice::from_ref(fwd);
            match self.sock.elements(&table, &[(ElemOp::Add, one), (ElemOp::Delete, one)]) {
                Ok(()) => {}
                // `add element` refuses a key that maps to another value.
                Err(e) if e.message.contains("File exists") => {
                    log::info!("network {net}: {fwd:?} left in place: its host port now forwards elsewhere")
                }
                Err(e) => failed.push(format!("{fwd:?}: {}", e.message)),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        Err(FirewallError::RemoveForwards { network: net.into(), source: NftError { message: failed.join("\n") } })
    }

    /// Every forward in network `net`'s table (empty when it has none).
    pub fn forwards(&mut self, net: &str) -> Result<Vec<Forward>, FirewallError> {
        self.sock.forwards(&table_name(net)).map_err(|source| FirewallError::ListTable { network: net.into(), source })
    }

    /// Deletes network `net`'s table with everything in it. An absent table
    /// is not an error.
    pub fn delete_network(&mut self, net: &str) -> Result<(), FirewallError> {
        let err = |source| FirewallError::DeleteNetwork { network: net.into(), source };
        self.nft()?.run(&delete_table_script(net)).map(drop).map_err(err)
    }

    /// Whether network `net`'s table exists (built by any version).
    pub fn table_exists(&mut self, net: &str) -> Result<bool, FirewallError> {
        Ok(self.table_state(net)? != TableState::Missing)
    }

    /// Whether base chain `chain` of table `table` (family `ip`) accepts by
    /// default; `None` when there is no such base chain.
    pub fn chain_policy_accepts(&mut self, table: &str, chain: &str) -> Result<Option<bool>, FirewallError> {
        self.sock
            .chain_policy_accepts(FAMILY_IPV4, table, chain)
            .map_err(|source| FirewallError::ListTable { network: table.into(), source })
    }

    /// Whether table `table` of family `inet` exists (firewalld's).
    pub fn inet_table_exists(&mut self, table: &str) -> Result<bool, FirewallError> {
        self.sock
            .table_comment(super::nfnl::FAMILY_INET, table)
            .map(|t| t.is_some())
            .map_err(|source| FirewallError::ListTable { network: table.into(), source })
    }

    /// nft's listing of network `net`'s table (rules and map elements), for
    /// diagnostics.
    pub fn list_table(&mut self, net: &str) -> Result<String, FirewallError> {
        let err = |source| FirewallError::ListTable { network: net.into(), source };
        self.nft()?.run(&format!("list table ip {}", table_name(net))).map_err(err)
    }
}

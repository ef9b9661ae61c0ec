//! [`Firewall`]: runs the [`script`](super::script) builders' output through
//! one [`NftContext`], one transaction per operation.

use super::script::{add_forwards_script, delete_table_script, remove_forwards_script, table_name, table_script};
use super::{FirewallError, Forward, NetworkRules, NftContext, NftError};

/// The nftables side of bridge networks, in one network namespace: the
/// namespace of the thread that called [`Firewall::new`], whichever thread
/// uses it afterwards.
#[derive(Debug)]
pub struct Firewall {
    ctx: NftContext,
}

impl Firewall {
    /// A firewall for the calling thread's network namespace.
    pub fn new() -> Result<Self, FirewallError> {
        let ctx = NftContext::new().map_err(|source| FirewallError::Open { source })?;
        Ok(Self { ctx })
    }

    /// Creates network `net`'s table, or brings its rules up to date,
    /// keeping every published port. Idempotent: any number of calls leave
    /// one copy of each rule. One transaction.
    pub fn ensure_network(&mut self, net: &NetworkRules) -> Result<(), FirewallError> {
        self.ctx
            .run(&table_script(net))
            .map(drop)
            .map_err(|source| FirewallError::EnsureNetwork { network: net.name.clone(), source })
    }

    /// Publishes `fwds` in network `net`, all or none (one transaction).
    ///
    /// Re-adding a forward that is already there is a no-op; a host port
    /// (with the same host address and protocol) already forwarded to a
    /// different container fails the whole call, as does an absent table.
    pub fn add_forwards(&mut self, net: &str, fwds: &[Forward]) -> Result<(), FirewallError> {
        let script = add_forwards_script(net, fwds);
        if script.is_empty() {
            return Ok(());
        }
        self.ctx.run(&script).map(drop).map_err(|source| FirewallError::AddForwards { network: net.into(), source })
    }

    /// Withdraws `fwds` from network `net`. Made for teardown, so it removes
    /// what it can and succeeds when there is nothing left to remove:
    ///
    /// - an absent forward, map entry or table is not an error;
    /// - a host port that now forwards to a *different* container is not
    ///   this caller's any more: it is left in place (logged), not an error.
    ///
    /// The common case is one transaction. When it fails, each forward is
    /// retried alone, and the error lists only the forwards that could not
    /// be removed for another reason.
    pub fn remove_forwards(&mut self, net: &str, fwds: &[Forward]) -> Result<(), FirewallError> {
        let script = remove_forwards_script(net, fwds);
        if script.is_empty() || self.ctx.run(&script).is_ok() || !self.table_exists(net)? {
            return Ok(());
        }
        let mut failed = Vec::new();
        for fwd in fwds {
            match self.ctx.run(&remove_forwards_script(net, std::slice::from_ref(fwd))) {
                Ok(_) => {}
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

    /// Deletes network `net`'s table with everything in it. An absent table
    /// is not an error.
    pub fn delete_network(&mut self, net: &str) -> Result<(), FirewallError> {
        self.ctx
            .run(&delete_table_script(net))
            .map(drop)
            .map_err(|source| FirewallError::DeleteNetwork { network: net.into(), source })
    }

    /// Whether network `net`'s table exists. Asks for the list of `ip`
    /// tables, so "absent" is never confused with a failure (such as no
    /// permission), which is an error.
    pub fn table_exists(&mut self, net: &str) -> Result<bool, FirewallError> {
        let listing = self
            .ctx
            .run("list tables ip")
            .map_err(|source| FirewallError::ListTable { network: net.into(), source })?;
        let want = table_name(net);
        Ok(listing.lines().any(|l| l.trim().strip_prefix("table ip ") == Some(want.as_str())))
    }

    /// nft's listing of network `net`'s table (rules and map elements), for
    /// diagnostics.
    pub fn list_table(&mut self, net: &str) -> Result<String, FirewallError> {
        self.ctx
            .run(&format!("list table ip {}", table_name(net)))
            .map_err(|source| FirewallError::ListTable { network: net.into(), source })
    }
}

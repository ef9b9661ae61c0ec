//! DEL: undo an attachment from its record, through the one undo function
//! every teardown uses (`crate::flow::undo`): the forwards, the veth pair,
//! the address (our lease, or the IPAM plugin's `DEL`), the record last.
//! Idempotent: a missing namespace, container or record is success.
//!
//! Decision: the veth pair's deletion is left to the child the plugin
//! starts as it exits (`closer::defer_link_delete`): the kernel's
//! `RTM_DELLINK` of a veth waits out RCU grace periods (three expedited
//! ones and an `rcu_barrier`, 10-25 ms here), which would be nearly all of
//! a DEL. What the runtime relies on once DEL has exited is released
//! before it exits: the published ports, the address, the record; and the
//! host end is cut off its bridge (port disabled), so the old container
//! end, which keeps the address until the kernel has deleted the pair,
//! can neither answer for it nor send, and the address may be leased again
//! at once. An ADD that meets the old host end of the same attachment
//! still being deleted removes it itself; a repeated DEL or a GC removes a
//! host end whose deletion never happened (the child killed).

use super::attach::{host, me, store};
use super::config::{Addressing, NetConf};
use super::ipam;
use super::record::attachment_id;
use super::spec::{CniError, Code, Params};
use crate::bridge::lease::LeaseStore;
use crate::flow::gc::{Action, undo_record_in};
use crate::flow::undo::Env;
use crate::model::mode::NetworkMode;
use crate::state::paths::Paths;
use crate::state::port_index::PortIndex;
use crate::state::record::{Phase, Record};
use crate::state::store::{Store, StoreError};

/// Undo `record` (marked as being torn down by this process first), every
/// step attempted; all errors come back together.
pub(super) fn undo(paths: &Paths, store: &Store, mut record: Record) -> Result<(), CniError> {
    let unfinished = record.phase == Phase::Setup;
    record.phase = Phase::Teardown;
    record.owner = me();
    store.write_record(&record).map_err(host)?;
    crate::fault::point("cni.del.marked");
    let mut actions: Vec<Action> = Vec::new();
    undo_record_in(&record, Env { paths, defer_links: true }, store, false, &mut actions);
    let mut errors: Vec<String> =
        actions.into_iter().filter_map(|a| a.error.map(|e| format!("{}: {e}", a.what))).collect();
    // An ADD killed between writing its lease and recording it: the lease
    // names this attachment as its holder.
    if let (true, NetworkMode::Bridge(Some(net))) = (unfinished, &record.mode) {
        let leases = LeaseStore::new(&paths.run_dir);
        let released =
            leases.remove_stale_temps(net.as_str()).and_then(|_| leases.release_holder(net.as_str(), &record.id));
        if let Err(e) = released {
            errors.push(super::error_chain(&e));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let who = record.cni().map_or_else(|| record.id.clone(), |(c, i)| format!("{c}/{i}"));
    Err(CniError::new(Code::HostFailure, format!("DEL of {who} on {} left errors", record.mode), errors.join("; ")))
}

/// DEL: undo the attachment; succeed when there is nothing (left) to undo.
pub fn del(params: &Params, conf: &NetConf, paths: &Paths, stdin: &[u8]) -> Result<(), CniError> {
    let id = attachment_id(conf.name.as_str(), &params.container_id, &params.ifname);
    let store = store(paths)?;
    match store.record(&id) {
        Ok(record) => undo(paths, &store, record),
        // No record: a repeated DEL, or an ADD that failed before writing
        // it, which created nothing but, with a delegated IPAM plugin,
        // maybe an address (its DEL is idempotent).
        Err(StoreError::ReadRecord { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            // A DEL that died after removing the record left its ports' index.
            PortIndex::new(&paths.run_dir).forget_id(&id).map_err(host)?;
            // A DEL whose exiting child died before deleting the veth pair
            // left its host end (cut off its bridge): named after the id.
            crate::flow::undo::remove_veth(crate::model::ifname::veth_name(&id).as_str()).map_err(host)?;
            match &conf.addressing {
                Addressing::Delegate { plugin } => ipam::exec(plugin, "DEL", params, stdin).map(drop),
                Addressing::Leases { .. } => Ok(()),
            }
        }
        Err(e @ (StoreError::CorruptRecord { .. } | StoreError::OtherFormat { .. })) => Err(CniError::new(
            Code::IoFailure,
            e.to_string(),
            "run `pelagos-net gc` (it removes records it cannot read), then DEL again",
        )),
        Err(e) => Err(CniError::new(Code::IoFailure, e.to_string(), super::error_chain(&e))),
    }
}

//! `host`: the command runs in the caller's own namespaces; nothing is
//! set up, and a published port would mean nothing.

use super::{Input, ModeDriver};
use crate::flow::plan::Refusal;
use crate::flow::steps::Step;

/// Host networking.
pub(super) struct Host;

impl ModeDriver for Host {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        let ports = &input.req.network.ports;
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(|m| m.to_string()).collect();
            return Err(Refusal::HostPublishes(list.join(", ")));
        }
        Ok(())
    }

    fn steps(&self, _input: &Input<'_>) -> Vec<Step> {
        vec![Step::ExecInPlace]
    }

    fn port_support(&self, _input: &Input<'_>) -> Option<String> {
        None
    }
}

//! `ns:PATH` (podman's spelling): the command runs in a network namespace
//! someone else made, networked or not as it already is. Nothing is set up
//! and nothing is published; `attach` is what networks such a namespace.

use super::{Input, ModeDriver};
use crate::flow::plan::Refusal;
use crate::flow::steps::{ChildNs, NsRef, Step};

/// An existing namespace, used as it is.
pub(super) struct Ns;

impl ModeDriver for Ns {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        if !input.req.command {
            return Err(Refusal::NotAttachable(input.mode.clone()));
        }
        let net = &input.req.network;
        if !net.ports.is_empty() || !net.host_loopback_ports.is_empty() {
            return Err(Refusal::NsPublishes);
        }
        Ok(())
    }

    fn steps(&self, _input: &Input<'_>) -> Vec<Step> {
        vec![Step::ForkChild { ns: ChildNs::Join { ns: NsRef::Given } }]
    }

    fn port_support(&self, _input: &Input<'_>) -> Option<String> {
        None
    }
}

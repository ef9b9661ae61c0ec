//! `loopback` (alias `none`): a namespace with only `lo`. Published ports
//! reach it through the builtin relay, the only driver that needs no
//! network helper.

use super::{Input, ModeDriver, refuse_host_loopback};
use crate::flow::plan::{Refusal, TargetKind};
use crate::flow::steps::Step;

/// Loopback only.
pub(super) struct Loopback;

impl ModeDriver for Loopback {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        refuse_host_loopback(input)?;
        if matches!(input.req.target, TargetKind::Given(_)) && !input.builtin {
            return Err(Refusal::NothingToAttach);
        }
        Ok(())
    }

    fn steps(&self, input: &Input<'_>) -> Vec<Step> {
        match input.req.target {
            TargetKind::Created => vec![Step::CreateNetns],
            _ => input.fork_child().into_iter().collect(),
        }
    }
}

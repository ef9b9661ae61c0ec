//! What a setup will do, as a runtime sees it: the mode, the port driver,
//! the steps in words, and the same JSON `pelagos-net plan --json` prints.

use crate::flow::plan::Plan;
use crate::flow::plan::{json, render};
use crate::model::mode::NetworkMode;

/// The plan of one setup (from [`super::Network::plan`] or
/// [`super::Attachment::plan`]).
///
/// ```
/// use pelagos_net::{Network, NetworkMode, NetworkOptions};
///
/// // Loopback only, one port published by the builtin relay.
/// let opts = NetworkOptions::new(NetworkMode::Loopback).publish("127.0.0.1:8080:80".parse()?);
/// let plan = Network::new().plan(&opts)?;
/// assert_eq!(*plan.mode(), NetworkMode::Loopback);
/// assert_eq!(plan.port_driver().0, "builtin");
/// assert!(plan.ops().contains(&"start_relay"));
/// println!("{plan}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SetupPlan(pub(crate) Plan);

impl SetupPlan {
    /// The mode that will run (`auto` and fallbacks resolved).
    pub fn mode(&self) -> &NetworkMode {
        &self.0.mode
    }

    /// Who forwards the published ports (`builtin`, `pasta`,
    /// `slirp4netns`, `nftables` or `none`) and why, in one sentence.
    pub fn port_driver(&self) -> (&str, &str) {
        (&self.0.port_driver.name, &self.0.port_driver.reason)
    }

    /// The steps in order, each in words.
    pub fn steps(&self) -> Vec<String> {
        match json(&self.0).get("steps") {
            Some(serde_json::Value::Array(steps)) => {
                steps.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Each step's operation name (`create_netns`, `spawn_helper`, ...), the
    /// names a fault-injection trace and `plan --json`'s `pipeline` use.
    pub fn ops(&self) -> Vec<&'static str> {
        self.0.steps.iter().map(|s| s.op()).collect()
    }

    /// Warnings about the choice (a degraded mode, exposure, known bugs).
    pub fn warnings(&self) -> &[String] {
        &self.0.warnings
    }

    /// The plan as `pelagos-net plan --json` prints it (its `plan.schema.json`).
    pub fn to_json(&self) -> serde_json::Value {
        json(&self.0)
    }
}

impl std::fmt::Display for SetupPlan {
    /// The plan as `pelagos-net plan` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&render(&self.0))
    }
}

//! The flow from a request to a running network: mode selection, the plan
//! `plan` prints, and the `run` flow that executes it.

pub mod plan;
pub mod run;
pub mod select;

//! The flow from a request to a networked namespace: one pipeline for
//! every mode and every caller.
//!
//! ```text
//! request + probed host --plan (pure)--> steps                  modes/: one small contract per mode
//!   plan    = print the steps (text, --json)                    plan/
//!   run     = execute the steps, release the command, undo       run.rs
//!   attach  = execute the steps on a namespace someone else made attach.rs
//!   detach  = undo what the attachment recorded                   attach.rs
//!   gc      = undo what dead records name                         gc.rs
//! ```
//!
//! [`plan`] decides, purely, everything that can be decided before acting,
//! refusals included; `exec` carries the steps out and records each
//! resource as it is created; [`undo`] is the one function that removes a
//! recorded resource, used by every teardown and by `gc`.

pub(crate) mod attach;
pub mod doctor;
mod error;
pub(crate) mod exec;
pub mod gc;
mod modes;
pub mod network;
pub mod plan;
pub mod run;
pub mod select;
pub mod steps;
pub mod undo;

pub use attach::DetachReport;
pub use error::{RunError, error_chain};

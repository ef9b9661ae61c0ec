//! Pure value types: CIDRs, port mappings, network modes.
//!
//! Nothing in here touches the filesystem, the network or a process: every
//! function is a total function of its arguments, which is what lets the
//! parsers be table-tested and fuzzed.

pub mod cidr;
pub mod cidr6;
pub mod config;
pub mod driver;
pub mod helper_opts;
pub mod ifname;
pub mod ipam;
pub mod mode;
pub mod port;
pub mod run_name;
pub mod target;

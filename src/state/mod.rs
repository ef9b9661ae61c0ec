//! State on disk: the roots every path comes from, run records, safe file
//! access, and `gc`, which undoes what dead runs left behind.

pub mod paths;
pub mod port_index;
pub mod record;
pub mod runs;
pub mod safefs;
pub mod store;

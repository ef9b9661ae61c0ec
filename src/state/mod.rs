//! State on disk: the roots every path comes from, run records, safe file
//! access, and `gc`, which undoes what dead runs left behind.

pub mod gc;
pub mod paths;
pub mod runs;
pub mod safefs;
pub mod store;

//! Published ports: the builtin port driver (listeners on the host, the
//! relay into the namespace, the socket factory that creates sockets inside
//! it) and the warnings about what a publication exposes.

pub mod builtin;
pub mod exposure;
pub mod nsfactory;
pub mod precheck;
pub mod relay;

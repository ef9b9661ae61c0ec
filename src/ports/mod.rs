//! Published ports: free host ports for `-p 80` ([`ephemeral`]), the
//! builtin port driver (listeners on the host, the relay into the
//! namespace, the socket factory that creates sockets inside it) and the
//! warnings about what a publication exposes.

pub mod builtin;
pub mod ephemeral;
pub mod exposure;
pub mod nsfactory;
pub mod precheck;
pub mod relay;

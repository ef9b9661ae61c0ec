//! IPv4 networks.

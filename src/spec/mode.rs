//! Network modes.

//! Facts about the host: what it can run (probe), why something fails
//! (diagnose; `flow::doctor` reports them with the mode ladder), and what
//! its processes and sockets are (procfs, procnet, sock_diag). Reads only;
//! never changes the host. Beside them, the two process primitives a child
//! needs whatever it is for: closing inherited descriptors (fds) and
//! starting a child that shares our memory (spawn).

pub mod diagnose;
pub mod fds;
pub mod kernel;
pub mod nsaddr;
pub mod path;
pub mod probe;
pub mod procfs;
pub mod procnet;
pub mod procnet6;
pub mod sockdiag;
pub mod spawn;

//! Facts about the host: what it can run (probe), why something fails
//! (diagnose; `flow::doctor` reports them with the mode ladder), and what
//! its processes and sockets are (procfs, procnet, sock_diag). Reads only;
//! never changes the host.

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

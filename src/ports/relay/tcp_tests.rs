use super::*;
use crate::ports::relay::{Counters, ForwarderConfig, SocketSource};
use std::sync::Arc;
use std::time::Duration;

/// A source that never makes a socket: these tests need none.
struct NoSockets;

impl SocketSource for NoSockets {
    fn socket(&mut self, _: SockFamily, _: SockKind) -> std::io::Result<OwnedFd> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

fn relay() -> Relay {
    Relay::new(Vec::new(), Box::new(NoSockets), ForwarderConfig::default(), Arc::new(Counters::default()))
        .expect("relay without listeners")
}

fn queue_deadlines(relay: &mut Relay, conns: u32) {
    let at = Instant::now() + Duration::from_secs(5);
    for index in 0..conns {
        relay.connecting.push_back(Deadline { at, conn: SlotRef { index, gen_: 0 }, attempt: 0 });
    }
}

fn queued(relay: &Relay) -> Vec<u32> {
    relay.connecting.iter().map(|d| d.conn.index).collect()
}

#[test]
fn a_finished_attempt_forgets_its_deadline() {
    let mut relay = relay();
    queue_deadlines(&mut relay, 3);
    relay.forget_deadline(SlotRef { index: 1, gen_: 0 }, 0);
    assert_eq!(queued(&relay), [0, 2]);
    relay.forget_deadline(SlotRef { index: 2, gen_: 0 }, 1);
    assert_eq!(queued(&relay), [0, 2], "another attempt's deadline stays");
}

#[test]
fn deadlines_of_ended_connections_go_before_they_are_due() {
    let mut relay = relay();
    queue_deadlines(&mut relay, 3);
    relay.expire_connects(Instant::now());
    assert!(relay.connecting.is_empty(), "{:?}", queued(&relay));
}

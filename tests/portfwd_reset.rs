//! Resets through the builtin port driver's TCP relay, against real sockets
//! in real namespaces (the rig of `tests/common/fwdrig.rs`): a reset reaches
//! the other side and frees the connection, and what a peer sent or
//! received before resetting is still passed on, as a direct connection
//! would let the other side read it before the error.

mod common;

use common::fwdrig::{BOTH, ClientPath, Rig, abort_on_drop, shared, wait_for};
use common::in_netns;
use pelagos_net::ports::relay::ForwarderConfig;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A server whose accept queue is full, so the relay's connect inside the
/// namespace stays pending (its SYN is dropped and retried about a second
/// later) until [`Stalled::release`].
struct Stalled {
    listener: TcpListener,
    filler: TcpStream,
}

impl Stalled {
    fn new(rig: &Rig) -> Self {
        let listener = rig.tcp_server("0.0.0.0:80");
        // SAFETY: listen(2) on a listening socket only changes its backlog;
        // the descriptor is owned by `listener`, alive for the call.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let filler = in_netns(&rig.container.name, || TcpStream::connect(("127.0.0.1", 80)).unwrap());
        Self { listener, filler }
    }

    /// Waits until the relay has accepted its client and had time to see
    /// what that client did, and asserts the connection is still open.
    fn wait_until_seen(&self, rig: &Rig) {
        wait_for("the relay to accept", Duration::from_secs(10), || rig.fwd().stats().tcp_accepted == 1);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rig.fwd().stats().tcp_active, 1, "the relay dropped a connection whose client sent data first");
    }

    /// Frees the accept queue and returns the relay's connection once its
    /// retried connect arrives.
    fn release(self) -> TcpStream {
        let (first, _) = self.listener.accept().unwrap();
        drop((first, self.filler));
        accept(&self.listener)
    }
}

/// The next connection on `listener`, within 10 s (the relay connects on
/// its own time), blocking with a read timeout.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let mut server = None;
    wait_for("the relay's connection", Duration::from_secs(10), || match listener.accept() {
        Ok((s, _)) => {
            server = Some(s);
            true
        }
        Err(_) => false,
    });
    listener.set_nonblocking(false).unwrap();
    let server = server.unwrap();
    server.set_nonblocking(false).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    server
}

#[test]
fn reset_after_half_close_reaches_the_other_side_and_frees_the_connection() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    for client_aborts in [true, false] {
        let client = rig.connect(ClientPath::Loopback, 8080);
        let server = accept(&listener);
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // One side sends its request and half-closes; the other reads it to EOF.
        let (mut closer, mut survivor) = if client_aborts { (client, server) } else { (server, client) };
        closer.write_all(b"request").unwrap();
        closer.shutdown(Shutdown::Write).unwrap();
        let mut request = Vec::new();
        survivor.read_to_end(&mut request).unwrap();
        assert_eq!(request, b"request");
        assert_eq!(rig.fwd().stats().tcp_active, 1);

        // The half-closed side now aborts.
        abort_on_drop(&closer);
        drop(closer);

        let which = if client_aborts { "client" } else { "server" };
        wait_for(&format!("the {which}'s reset to close the relayed connection"), Duration::from_secs(10), || {
            rig.fwd().stats().tcp_active == 0
        });
        wait_for(&format!("the reset of the {which} to reach the other side"), Duration::from_secs(10), || {
            survivor.write(b"late reply").is_err()
        });
    }
}

/// Reads from `stream` until EOF or a reset, and returns what arrived.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
    got
}

/// The client writes and resets while the relay is still connecting inside
/// the namespace: the server's accept queue is full, so the relay's SYN is
/// dropped and retried about a second later. The bytes the client sent
/// before its reset still reach the server once the connect completes.
#[test]
fn data_sent_before_a_reset_while_connecting_still_reaches_the_server() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let stalled = Stalled::new(&rig);

    let mut client = rig.connect(ClientPath::Loopback, 8080);
    client.write_all(b"last words").unwrap();
    abort_on_drop(&client);
    drop(client);
    stalled.wait_until_seen(&rig);

    let mut server = stalled.release();
    assert_eq!(read_until_closed(&mut server), b"last words");
    wait_for("the connection to close", Duration::from_secs(10), || rig.fwd().stats().tcp_active == 0);
}

#[test]
fn data_sent_just_before_a_reset_still_reaches_the_server() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    let mut client = rig.connect(ClientPath::Loopback, 8080);
    let mut server = accept(&listener);
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.write_all(b"last words").unwrap();
    abort_on_drop(&client);
    drop(client);
    assert_eq!(read_until_closed(&mut server), b"last words");
    wait_for("the connection to close", Duration::from_secs(10), || rig.fwd().stats().tcp_active == 0);
}

/// The client sends its request, half-closes, then resets, all while the
/// relay is still connecting: the server gets the request and then the
/// reset, not a clean EOF (a reset after a FIN ends the relay's read with
/// EOF; the pending error must still be passed on), and the connection is
/// freed without the server closing it.
#[test]
fn reset_after_a_half_close_while_connecting_still_reaches_the_server() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let stalled = Stalled::new(&rig);
    let mut client = rig.connect(ClientPath::Loopback, 8080);
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    abort_on_drop(&client);
    drop(client);
    stalled.wait_until_seen(&rig);

    let mut server = stalled.release();
    let mut request = [0; 7];
    server.read_exact(&mut request).unwrap();
    assert_eq!(&request, b"request");
    let mut buf = [0; 16];
    match server.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the client's reset became {other:?}"),
    }
    wait_for("the connection to close", Duration::from_secs(10), || rig.fwd().stats().tcp_active == 0);
}

/// A server answers early (an HTTP 413, say) and closes while the client is
/// still uploading, which resets the connection: the client still reads
/// the answer, as it would over a direct connection. Repeated, since the
/// answer and the reset often reach the relay in one wake-up.
#[test]
fn early_answer_of_a_server_that_resets_reaches_the_uploading_client() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    for path in BOTH {
        for round in 0..10 {
            let mut client = rig.connect(path, 8080);
            let mut server = accept(&listener);
            let mut upload = client.try_clone().unwrap();
            upload.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            let uploader = std::thread::spawn(move || {
                let chunk = vec![7u8; 64 * 1024];
                while upload.write_all(&chunk).is_ok() {}
            });
            // The upload is flowing; the server stops reading and answers.
            let mut first = [0; 1];
            server.read_exact(&mut first).unwrap();
            server.write_all(b"HTTP/1.1 413 Payload Too Large\r\n\r\n").unwrap();
            drop(server); // unread data: the kernel resets the connection
            let answer = read_until_closed(&mut client);
            assert!(
                answer.starts_with(b"HTTP/1.1 413"),
                "{path:?} round {round}: the client read {:?}",
                String::from_utf8_lossy(&answer)
            );
            uploader.join().unwrap();
            wait_for("the connection to close", Duration::from_secs(5), || rig.fwd().stats().tcp_active == 0);
        }
    }
}

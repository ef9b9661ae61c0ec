use super::*;
use nix::sys::socket::getpeername;
use std::io::Write;
use std::net::{TcpListener, TcpStream};

/// A client that wrote and reset before the accept still comes out of
/// `accept` with its address and its data (its `getpeername` would fail).
#[test]
fn accept_returns_a_client_that_reset_before_it_with_address_and_data() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let client_addr = client.local_addr().unwrap();
    client.write_all(b"last words").unwrap();
    setsockopt(&client, sockopt::Linger, &libc::linger { l_onoff: 1, l_linger: 0 }).unwrap();
    drop(client);
    std::thread::sleep(Duration::from_millis(50));

    let (fd, peer) = accept(listener.as_fd()).unwrap();
    assert_eq!(peer, client_addr);
    assert!(getpeername::<SockaddrStorage>(fd.as_raw_fd()).is_err(), "the client should have reset already");
    assert_eq!(unread_bytes(fd.as_fd()), 10);
    let mut buf = [0; 16];
    let n = nix::unistd::read(&fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"last words");
    assert_eq!(socket_error(fd.as_fd()), Err(Errno::ECONNRESET));
}

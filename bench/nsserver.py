#!/usr/bin/python3
"""Benchmark server, run as the command inside the namespace (python3 stdlib only).

Usage: nsserver.py PORT [BIND_ADDR]

The first byte a client sends picks the mode of its connection:
  b"S"  sink: read until EOF (the client half-closes), then reply with the
        byte count (ASCII) and close
  b"E"  echo: send back everything until EOF
  EOF   (connect+close) just close
One thread per connection. Exits on SIGTERM through a handler: bare pasta
runs its command as the init of a new PID namespace, and such an init is
immune to signals it has no handler for.
"""

import os
import signal
import socket
import sys
import threading


def handle(conn: socket.socket) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"S":
            buf = bytearray(1 << 20)
            total = 0
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                total += n
            conn.sendall(str(total).encode())
        elif mode == b"E":
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    port = int(sys.argv[1])
    addr = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(512)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()

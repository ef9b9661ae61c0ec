#!/usr/bin/python3
"""Port-driver benchmark: the builtin relay against pasta's own forwarding
(python3 stdlib only).

Started by bench/portfwd/run as root *inside* the throwaway host network
namespace (`ip netns exec pnp-hPID /usr/bin/python3 bench.py ...`). It
starts two runs side by side, as the unprivileged user (uid/gid set and
supplementary groups cleared in the fork, what `setpriv --reuid=U
--regid=G --clear-groups` does):

    pelagos-net run --network pasta --port-driver builtin -p HB:8080 -p HB2:8081 -- bench.py --serve 8080 8081
    pelagos-net run --network pasta --port-driver pasta   -p HP:8080 -p HP2:8081 -- bench.py --serve 8080 8081

and measures them with clients in this process:
  * loopback clients: sockets of this (host) namespace, to 127.0.0.1:H
    (for pasta that is its splice path);
  * non-loopback clients: sockets created inside the throwaway upstream
    namespace, to the host namespace's veth address (pasta's tap path);
  * the direct reference: sockets created inside the builtin run's own
    network namespace, to 127.0.0.1:8080 (no forwarder at all).
Sockets are created in another namespace by setns(2) of this (single)
thread around socket(2) and back; a socket stays in the namespace it was
created in. Nothing is sent anywhere else.

The same file is the server (`--serve PORT BANNER_PORT`, the command inside
both runs), a single-threaded selectors loop. On PORT the first byte picks
the mode of a connection:
  b"S" + 8-byte token   sink: count the bytes under the token; on EOF
                        reply with the count and close
  b"E"                  echo everything back until EOF
  b"Q"                  control: for every 8-byte token received, reply
                        with that token's count and "\\n"
  EOF                   (connect+close) just close
On BANNER_PORT the server speaks first: "HELLO <client address>\\n".

Throughput is timed from connect until the server's count (asked over a
control connection made directly inside the namespace, never through the
forwarder) reaches the size sent: no half-close and no reply through the
forwarder is needed, which this pasta build loses now and then after a
large spliced transfer (the reply is still read afterwards and a lost one
is counted in a note).

Exit status: 0 when every measurement ran (a MISS or a stall of pasta is a
result, not a failure), 2 when the benchmark itself broke.
"""

import gc
import os
import selectors
import signal
import socket
import sys
import time

from benchlib import (
    LOOPBACK,
    BenchError,
    Local,
    UserEnv,
    all_procs,
    arg_parser,
    become_subreaper,
    cleanup_mode,
    conn_close,
    conn_echo_close,
    descendants,
    measure_and_report,
    median,
    pct,
    pinned,
    reap_all,
    rtt,
    setns,
    table,
    verdict,
    wait_exit,
)

NS_PORT, NS_BANNER = 8080, 8081
CHUNK = 1 << 20


# --------------------------------------------------------------------------
# the server (inside the namespace, as the user)


def serve(port, banner_port):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sel = selectors.DefaultSelector()
    counts = {}
    big = bytearray(CHUNK)

    def listen(p, tag):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", p))
        ls.listen(1024)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, tag)

    listen(port, "L")
    listen(banner_port, "B")

    class Conn:
        __slots__ = ("sock", "mode", "buf", "token")

        def __init__(self, sock, mode=None):
            self.sock, self.mode, self.buf, self.token = sock, mode, b"", None

    def close(c):
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def reply(c, data):
        c.sock.settimeout(5.0)
        try:
            c.sock.sendall(data)
        finally:
            c.sock.setblocking(False)

    def on_data(c):
        if c.mode == "S":
            for _ in range(64):
                try:
                    n = c.sock.recv_into(big)
                except BlockingIOError:
                    return
                if not n:
                    reply(c, str(counts[c.token]).encode())
                    close(c)
                    return
                counts[c.token] += n
            return
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            close(c)
            return
        if c.mode == "E":
            reply(c, data)
        elif c.mode == "B":
            pass  # whatever the banner client sends is dropped
        elif c.mode == "Q":
            c.buf += data
            out = []
            while len(c.buf) >= 8:
                out.append(b"%d\n" % counts.get(c.buf[:8], -1))
                c.buf = c.buf[8:]
            if out:
                reply(c, b"".join(out))
        else:
            c.buf += data
            m = c.buf[:1]
            if m == b"S":
                if len(c.buf) < 9:
                    return
                c.mode, c.token = "S", c.buf[1:9]
                counts[c.token] = len(c.buf) - 9
                c.buf = b""
            elif m == b"E":
                c.mode, rest, c.buf = "E", c.buf[1:], b""
                if rest:
                    reply(c, rest)
            elif m == b"Q":
                c.mode, c.buf = "Q", c.buf[1:]
                if len(c.buf) >= 8:
                    on_data_q_flush(c)
            else:
                close(c)

    def on_data_q_flush(c):
        out = []
        while len(c.buf) >= 8:
            out.append(b"%d\n" % counts.get(c.buf[:8], -1))
            c.buf = c.buf[8:]
        reply(c, b"".join(out))

    while True:
        for key, _ in sel.select():
            if key.data in ("L", "B"):
                try:
                    s, peer = key.fileobj.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    continue
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                c = Conn(s, "B" if key.data == "B" else None)
                sel.register(s, selectors.EVENT_READ, c)
                if key.data == "B":
                    try:
                        reply(c, f"HELLO {peer[0]}\n".encode())
                    except OSError:
                        close(c)
            else:
                c = key.data
                try:
                    on_data(c)
                except OSError:
                    close(c)


# --------------------------------------------------------------------------
# threads and their CPU time


def tasks(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def comm_of(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def task_cpu_ns(pid, tid):
    """CPU time of one thread in ns (schedstat; utime+stime ticks as fallback)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            data = f.read()
        rest = data[data.rfind(")") + 2 :].split()
        return (int(rest[11]) + int(rest[12])) * 10_000_000
    except (OSError, ValueError, IndexError):
        return 0


def threads_cpu_ns(pairs):
    return sum(task_cpu_ns(p, t) for p, t in pairs)


# --------------------------------------------------------------------------
# network namespaces


class Netns(Local):
    """TCP sockets of the network namespace at path, made there by setns(2)
    of this (single) thread around socket(2) and back."""

    HOME = None  # this process's own (host) namespace

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def socket(self):
        if self is Netns.HOME:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        setns(self.fd)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            setns(Netns.HOME.fd)


# --------------------------------------------------------------------------
# the two runs


class Env(UserEnv):
    def spawn(self, argv):
        p = super().spawn(argv)
        self.tracker.add(p.pid)
        return p


class Run:
    """One `pelagos-net run` with the server as its command."""

    def __init__(self, env, driver, port, banner_port):
        self.env, self.driver, self.port, self.banner_port = env, driver, port, banner_port
        a = env.a
        argv = [
            a.bin, "--run-dir", a.run_dir, "--netns-dir", a.netns_dir, "run",
            "--network", "pasta", "--port-driver", driver,
            "-p", f"{port}:{NS_PORT}", "-p", f"{banner_port}:{NS_BANNER}",
            "--", "/usr/bin/python3", os.path.join(a.workdir, "bench.py"), "--serve", str(NS_PORT), str(NS_BANNER),
        ]
        if pinned():
            argv = ["taskset", "-c", "1", *argv]
        self.proc = env.spawn(argv)
        self.server = self.pasta = None
        self.relay = None  # (pid, tid) of the builtin relay thread
        self.ns = None
        self.ctl = None

    def wait_ready(self, limit=20.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.driver} run exited {self.proc.returncode} before serving\n{self.env.log_tail()}")
            try:
                with Netns.HOME.connect((LOOPBACK, self.port), 0.5) as s:
                    s.sendall(b"Ex")
                    if s.recv(1) == b"x":
                        break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            raise BenchError(f"{self.driver}: 127.0.0.1:{self.port} not echoing after {limit} s\n{self.env.log_tail()}")
        procs = all_procs()
        for pid in descendants(self.proc.pid, procs):
            self.env.tracker.add(pid)
            comm = procs[pid][2]
            if comm.startswith(("passt", "pasta")):
                self.pasta = pid
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                cmd = b""
            if b"--serve" in cmd and self.server is None:
                self.server = pid
        if not self.server or not self.pasta:
            raise BenchError(f"{self.driver}: server or pasta not found under pid {self.proc.pid}")
        if self.driver == "builtin":
            for tid in tasks(self.proc.pid):
                if comm_of(self.proc.pid, tid) == "pelagos-portfwd":
                    self.relay = (self.proc.pid, tid)
            if not self.relay:
                raise BenchError("builtin: no pelagos-portfwd thread in the pelagos-net process")
        self.ns = Netns(f"/proc/{self.server}/ns/net")
        self.ctl = self.ns.connect((LOOPBACK, NS_PORT))
        self.ctl.sendall(b"Q")

    def count(self, token):
        self.ctl.sendall(token)
        buf = b""
        while not buf.endswith(b"\n"):
            d = self.ctl.recv(64)
            if not d:
                raise BenchError(f"{self.driver}: control connection closed")
            buf += d
        return int(buf)

    def forwarder_threads(self):
        """(pid, tid) of the forwarder: the relay thread, or pasta."""
        if self.driver == "builtin":
            return [self.relay]
        return [(self.pasta, t) for t in tasks(self.pasta)]

    def all_threads(self):
        """Every thread of pelagos-net's processes and pasta."""
        out = []
        for pid in [self.proc.pid] + descendants(self.proc.pid):
            if pid == self.server:
                continue
            out.extend((pid, t) for t in tasks(pid))
        return out


# --------------------------------------------------------------------------
# measurements


_token = [0]


def new_token():
    _token[0] += 1
    return b"%08d" % _token[0]


def push(run, ns, addr, nbytes, deadline_s, stall_s, cpu=True):
    """Send nbytes into the sink at addr from a socket of ns. Timed from
    connect until the server has counted them all. Returns a dict:
    ok, mib_s, secs, got (bytes the server counted), how (stall/timeout),
    cores (forwarder CPU / wall), cores_all, reply_lost."""
    token = new_token()
    buf = memoryview(bytearray(b"\xa5" * CHUNK))
    fwd, every = (run.forwarder_threads(), run.all_threads()) if cpu else ([], [])
    c0, a0 = threads_cpu_ns(fwd), threads_cpu_ns(every)
    per0 = {pt: task_cpu_ns(*pt) for pt in every}
    t0 = time.perf_counter()
    res = {"ok": False, "got": 0, "how": "", "reply_lost": False}
    try:
        s = ns.connect(addr, 5.0)
    except OSError as e:
        res.update(how=f"connect failed: {e}", secs=0.0)
        return res
    with s:
        s.settimeout(0.1)
        head = b"S" + token
        sent, total = 0, nbytes + len(head)
        last_move, last_got, next_check = t0, 0, t0 + 0.1
        while True:
            now = time.perf_counter()
            if sent < total:
                try:
                    if sent < len(head):
                        n = s.send(head[sent:])
                    else:
                        off = sent - len(head)
                        n = s.send(buf[: min(CHUNK, nbytes - off)])
                    sent += n
                    if n:
                        last_move = now
                except socket.timeout:
                    pass
                except OSError as e:
                    res["how"] = f"send failed: {e!r}"
                    break
                if now < next_check:
                    continue
                next_check = now + 0.1
            else:
                time.sleep(0.00025)
            got = run.count(token)
            if got >= nbytes:
                res.update(ok=True, got=got)
                break
            if got > last_got:
                last_got, last_move = got, now
            if now - last_move > stall_s:
                res.update(how="stalled", got=got)
                break
            if now - t0 > deadline_s:
                res.update(how="timeout", got=got)
                break
        t1 = time.perf_counter()
        c1, a1 = threads_cpu_ns(fwd), threads_cpu_ns(every)
        res["secs"] = t1 - t0
        res["threads"] = {
            f"{comm_of(*pt)}/{pt[0]}/{pt[1]}": round((task_cpu_ns(*pt) - v) / 1e9 / res["secs"], 3) for pt, v in per0.items()
        }
        if not res["ok"]:
            res["got"] = run.count(token)
        res["mib_s"] = res["got"] / (1 << 20) / res["secs"] if res["secs"] > 0 else 0.0
        res["cores"] = (c1 - c0) / 1e9 / res["secs"] if cpu and res["secs"] > 0 else None
        res["cores_all"] = (a1 - a0) / 1e9 / res["secs"] if cpu and res["secs"] > 0 else None
        if res["ok"]:
            # The sink's own reply, through the forwarder (not timed).
            try:
                s.settimeout(2.0)
                s.shutdown(socket.SHUT_WR)
                reply = b""
                while True:
                    d = s.recv(64)
                    if not d:
                        break
                    reply += d
                res["reply_lost"] = reply != str(nbytes).encode()
            except OSError:
                res["reply_lost"] = True
    return res


def banner(ns, addr, timeout=3.0):
    """(ok, what the server says the client's address is, or the failure)."""
    t0 = time.perf_counter()
    try:
        with ns.connect(addr, timeout) as s:
            s.settimeout(max(0.05, timeout - (time.perf_counter() - t0)))
            data = b""
            while not data.endswith(b"\n"):
                d = s.recv(128)
                if not d:
                    return False, f"EOF after {data!r}"
                data += d
        word = data.decode("ascii", "replace").split()
        return (len(word) == 2 and word[0] == "HELLO"), word[-1] if word else "?"
    except socket.timeout:
        return False, "no banner in 3 s"
    except OSError as e:
        return False, repr(e)


def paired(a, b):
    r = [x / y for x, y in zip(a, b) if x is not None and y]
    if not r:
        return None, None
    return median(r), (pct(r, 75) - pct(r, 25)) / 2


def bench(env, n, host_addr, upns):
    runs = {
        "builtin": Run(env, "builtin", 18080, 18081),
        "pasta": Run(env, "pasta", 18090, 18091),
    }
    res = {"iterations": n}
    old_aff = os.sched_getaffinity(0)
    if pinned():
        os.sched_setaffinity(0, {0})
    try:
        for r in runs.values():
            r.wait_ready()
        B, P = runs["builtin"], runs["pasta"]
        lo = {k: (Netns.HOME, (LOOPBACK, r.port)) for k, r in runs.items()}
        lo["direct"] = (B.ns, (LOOPBACK, NS_PORT))
        owner = {"builtin": B, "pasta": P, "direct": B}
        keys = ["builtin", "pasta", "direct"]

        # 1. throughput, loopback client ------------------------------------
        print(f"[1/3] throughput, loopback client: {n['rounds']} rounds x {n['bytes'] >> 20} MiB ...", file=sys.stderr, flush=True)
        for k in keys:  # warm-up
            push(owner[k], *lo[k], min(n["bytes"], 64 << 20), 10.0, 5.0, cpu=False)
        tp = {k: [] for k in keys}
        stalls = {k: [] for k in keys}
        lost = {k: 0 for k in keys}
        gc.disable()
        try:
            for rnd in range(n["rounds"]):
                order = keys[rnd % 3 :] + keys[: rnd % 3]
                for k in order:
                    for attempt in range(3):
                        x = push(owner[k], *lo[k], n["bytes"], 30.0, 5.0, cpu=(k != "direct"))
                        lost[k] += x["reply_lost"]
                        if x["ok"]:
                            tp[k].append(x)
                            break
                        stalls[k].append(f"{x['how']} after {x['got'] >> 20} MiB")
                    else:
                        tp[k].append(None)
        finally:
            gc.enable()

        def col(k, f):
            return [f(x) if x else None for x in tp[k]]

        res["throughput_raw"] = {k: [x for x in tp[k] if x] for k in keys}
        res["throughput"] = {
            k: {
                "mib_s": col(k, lambda x: x["mib_s"]),
                "cores": col(k, lambda x: x["cores"]),
                "cores_all": col(k, lambda x: x["cores_all"]),
                "stalls": stalls[k],
                "reply_lost": lost[k],
            }
            for k in keys
        }

        # 2. latency, loopback client -----------------------------------------
        print(f"[2/3] latency, loopback client: {n['rtt']} round trips, {n['conn']} connections ...", file=sys.stderr, flush=True)
        lat = {k: [] for k in keys}
        cc = {k: [] for k in keys}
        cec = {k: [] for k in keys}
        for k in keys:  # warm-up
            conn_close(*lo[k], 20)
            conn_echo_close(*lo[k], 20)
        per = max(1, n["rtt"] // n["lat_rounds"])
        perc = max(1, n["conn"] // n["lat_rounds"])
        gc.disable()
        try:
            for rnd in range(n["lat_rounds"]):
                order = keys[rnd % 3 :] + keys[: rnd % 3]
                for k in order:
                    lat[k].append(rtt(*lo[k], per))
                for k in order:
                    cc[k].append(conn_close(*lo[k], perc))
                for k in order:
                    cec[k].append(conn_echo_close(*lo[k], perc))
        finally:
            gc.enable()
        res["latency"] = {
            k: {
                "rtt_p50_us": median(sum(lat[k], [])),
                "rtt_p90_us": pct(sum(lat[k], []), 90),
                "conn_p50_us": median(sum(cc[k], [])),
                "conn_echo_p50_us": median(sum(cec[k], [])),
                "rounds": {
                    "rtt": [median(x) for x in lat[k]],
                    "conn": [median(x) for x in cc[k]],
                    "conn_echo": [median(x) for x in cec[k]],
                },
            }
            for k in keys
        }

        # 3. non-loopback client (pasta: its tap path) --------------------------
        print(f"[3/3] non-loopback client from the upstream netns: {n['nl_rounds']} x {n['nl_bytes'] >> 20} MiB, banners ...", file=sys.stderr, flush=True)
        nl = {}
        for k in ("builtin", "pasta"):
            r = runs[k]
            addr = (host_addr, r.port)
            out = {"runs": [], "banner": [], "banner_lo": []}
            for i in range(n["nl_rounds"]):
                x = push(r, upns, addr, n["nl_bytes"], n["nl_deadline"], n["nl_stall"])
                out["runs"].append(x)
                if not x["ok"]:
                    break  # a stall or a crawl does not get better by repeating it
            for i in range(5):
                out["banner"].append(banner(upns, (host_addr, r.banner_port)))
                out["banner_lo"].append(banner(Netns.HOME, (LOOPBACK, r.banner_port)))
            nl[k] = out
        res["nonloopback"] = nl
    finally:
        stop = {}
        for k, r in runs.items():
            if r.ctl:
                r.ctl.close()
            t0 = time.perf_counter()
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
            try:
                wait_exit(r.proc, 10.0)
                stop[k] = (time.perf_counter() - t0) * 1e3
            except BenchError as e:
                stop[k] = None
                print(f"bench: {e}", file=sys.stderr)
        reap_all()
        res["stop_ms"] = stop
        os.sched_setaffinity(0, old_aff)
    return res


# --------------------------------------------------------------------------
# report


def render(res, meta):
    rows = []

    def row(measure, b, p, ratio="-", goal="-", result="info"):
        rows.append((measure, b, p, ratio, goal, result))

    def f(x, fmt):
        return fmt.format(x) if x is not None else "-"

    def med(xs):
        xs = [x for x in xs if x is not None]
        return median(xs) if xs else None

    tp = res["throughput"]
    b, p, d = tp["builtin"], tp["pasta"], tp["direct"]
    r, noise = paired(b["mib_s"], p["mib_s"])
    bc, pc = med(b["cores"]), med(p["cores"])
    ok = r is not None and r >= 1.0 and bc is not None and bc <= 0.5
    if med(p["mib_s"]) is None and med(b["mib_s"]) is not None and bc is not None and bc <= 0.5:
        ok = True  # pasta never completed a transfer
    row("1 throughput, loopback client (MiB/s)", f(med(b["mib_s"]), "{:.0f}"), f(med(p["mib_s"]), "{:.0f}"),
        f"{r:.2f} ±{noise:.2f}" if r else "-", ">= 1.0x at <= 0.5 core", verdict(ok))
    rc, _ = paired(b["cores"], p["cores"])
    row("  forwarder CPU (cores)", f(bc, "{:.2f}"), f(pc, "{:.2f}"), f(rc, "{:.2f}"), "builtin <= 0.5",
        verdict(bc is not None and bc <= 0.5))
    row("  pelagos-net + pasta CPU (cores)", f(med(b["cores_all"]), "{:.2f}"), f(med(p["cores_all"]), "{:.2f}"))
    row("  direct loopback in the netns (MiB/s)", f(med(d["mib_s"]), "{:.0f}"), "", "-", "reference")
    row("  transfers stalled and retried", str(len(b["stalls"])), str(len(p["stalls"])))
    row("  sink replies lost (not timed)", str(b["reply_lost"]), str(p["reply_lost"]))

    lt = res["latency"]
    b, p, d = lt["builtin"], lt["pasta"], lt["direct"]
    for label, key, rkey in (
        ("2 request/response p50 (us)", "rtt_p50_us", "rtt"),
        ("  connect+close p50 (us)", "conn_p50_us", "conn"),
        ("  connect+1B echo+close p50 (us)", "conn_echo_p50_us", "conn_echo"),
    ):
        r, noise = paired(b["rounds"][rkey], p["rounds"][rkey])
        row(label, f(b[key], "{:.1f}"), f(p[key], "{:.1f}"), f"{r:.2f} ±{noise:.2f}", "<= 1.10x", verdict(r <= 1.10))
    row("  request/response p90 (us)", f(b["rtt_p90_us"], "{:.1f}"), f(p["rtt_p90_us"], "{:.1f}"),
        f(b["rtt_p90_us"] / p["rtt_p90_us"], "{:.2f}"))
    row("  direct: req/resp p50 (us)", f(d["rtt_p50_us"], "{:.1f}"), "", "-", "reference")
    row("  direct: connect+close p50 (us)", f(d["conn_p50_us"], "{:.1f}"), "", "-", "reference")
    row("  direct: connect+echo+close p50 (us)", f(d["conn_echo_p50_us"], "{:.1f}"), "", "-", "reference")

    nl = res["nonloopback"]

    def nl_text(x):
        runs = x["runs"]
        good = [y["mib_s"] for y in runs if y["ok"]]
        bad = [y for y in runs if not y["ok"]]
        if bad:
            y = bad[0]
            if y["how"] == "stalled":
                return f"stalled at {y['got'] / (1 << 20):.1f} MiB", None
            if y["how"] == "timeout":
                return f"{y['got'] / (1 << 20):.0f} MiB/{y['secs']:.0f}s={y['got'] * 8 / y['secs'] / 1e6:.1f}Mbit/s", None
            return y["how"][:30], None
        return f"{median(good):.0f}", median(good)

    bt, bv = nl_text(nl["builtin"])
    pt, pv = nl_text(nl["pasta"])
    r = bv / pv if bv and pv else None
    ok = bv is not None and (pv is None or bv >= pv)
    row("3 throughput, non-loopback client (MiB/s)", bt, pt, f(r, "{:.2f}"), "completes, >= pasta", verdict(ok))
    cores = {k: med([y["cores"] for y in nl[k]["runs"]]) for k in nl}
    row("  forwarder CPU meanwhile (cores)", f(cores["builtin"], "{:.2f}"), f(cores["pasta"], "{:.2f}"))
    hc = {k: (sum(1 for y in nl[k]["runs"] if y["ok"] and not y["reply_lost"]), sum(1 for y in nl[k]["runs"] if y["ok"]))
          for k in nl}
    row("  half-close, then the sink's reply arrives", "%d/%d" % hc["builtin"], "%d/%d" % hc["pasta"], "-",
        "builtin all", verdict(hc["builtin"][0] == hc["builtin"][1] > 0))
    bb = sum(ok for ok, _ in nl["builtin"]["banner"])
    pb = sum(ok for ok, _ in nl["pasta"]["banner"])
    row("  server-speaks-first banner, 3 s timeout", f"{bb}/5", f"{pb}/5", "-", "builtin 5/5", verdict(bb == 5))

    def seen(x):
        vals = [w for ok, w in x if ok]
        return vals[0] if vals else "-"

    row("  server sees the client as", seen(nl["builtin"]["banner"]), seen(nl["pasta"]["banner"]), "-", "(client 10.x.0.1)")
    blo = sum(ok for ok, _ in nl["builtin"]["banner_lo"])
    plo = sum(ok for ok, _ in nl["pasta"]["banner_lo"])
    row("  banner, loopback client", f"{blo}/5", f"{plo}/5")
    row("  server sees a loopback client as", seen(nl["builtin"]["banner_lo"]), seen(nl["pasta"]["banner_lo"]))
    sm = res.get("stop_ms", {})
    row("  SIGTERM -> pelagos-net exit (ms)", f(sm.get("builtin"), "{:.0f}"), f(sm.get("pasta"), "{:.0f}"))

    head = ("measure", "builtin", "pasta", "ratio", "goal", "result")
    out = [meta, ""] + table(head, rows, left=(0, 4))
    notes = []
    # Threads other than the forwarder that burned CPU during the transfers.
    for k in ("builtin", "pasta"):
        per = {}
        for x in tp[k]["mib_s"] and res["throughput_raw"][k]:
            for name, v in (x.get("threads") or {}).items():
                per.setdefault(name.split("/")[0], []).append(v)
        busy = {name: median(v) for name, v in per.items() if median(v) >= 0.02}
        if busy:
            notes.append(f"note: {k} run, CPU per thread during loopback transfers (cores, median): "
                         + ", ".join(f"{n} {v:.2f}" for n, v in sorted(busy.items(), key=lambda i: -i[1])))
    for k in ("builtin", "pasta", "direct"):
        if tp[k]["stalls"]:
            notes.append(f"note: {k} loopback transfers that stalled (retried): {'; '.join(tp[k]['stalls'])}")
    for k in ("builtin", "pasta"):
        x = nl[k]
        bad = [y for y in x["runs"] if not y["ok"]]
        if bad:
            y = bad[0]
            notes.append(
                f"note: {k} non-loopback transfer: {y['how']} after {y['got']} bytes counted by the server "
                f"in {y['secs']:.1f} s ({len(x['runs']) - 1} complete before it)"
            )
        fails = [w for ok, w in x["banner"] if not ok]
        if fails:
            notes.append(f"note: {k} non-loopback banner failures: {', '.join(dict.fromkeys(fails))}")
    if notes:
        out.append("")
        out += notes
    return "\n".join(out)


# --------------------------------------------------------------------------
# main


def main():
    ap = arg_parser(pidfile_required=False)  # the server (--serve) has none
    ap.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "BANNER_PORT"))
    ap.add_argument("--upns", help="name of the upstream netns (non-loopback clients)")
    ap.add_argument("--host-addr", help="the host netns's veth address")
    a = ap.parse_args()
    if a.serve:
        return serve(*a.serve)
    if a.cleanup:
        return cleanup_mode(a)
    become_subreaper()

    q = a.quick
    n = {
        "rounds": 2 if q else 8,
        "bytes": (128 if q else 1024) << 20,
        "lat_rounds": 2 if q else 8,
        "rtt": 300 if q else 4000,
        "conn": 100 if q else 1000,
        "nl_rounds": 1 if q else 3,
        "nl_bytes": (16 if q else 1024) << 20,
        "nl_deadline": 5.0 if q else 20.0,
        "nl_stall": 2.0 if q else 4.0,
    }
    env = Env(a)
    Netns.HOME = Netns("/proc/thread-self/ns/net")
    upns = Netns(f"/run/netns/{a.upns}")
    u = os.uname()
    meta = (
        f"pelagos-net port-driver bench  kernel {u.release}  cpus {os.cpu_count()}  user {a.user} ({a.uid})  "
        f"mode {'QUICK' if q else 'full'}\n"
        f"{a.label + chr(10) if a.label else ''}"
        f"both runs: pelagos-net run --network pasta --port-driver builtin|pasta -p H:8080 -p H2:8081 -- bench.py --serve\n"
        f"iterations: throughput {n['rounds']} rounds x {n['bytes'] >> 20} MiB; {n['rtt']} round trips, "
        f"{n['conn']} connects each; non-loopback {n['nl_rounds']} x {n['nl_bytes'] >> 20} MiB "
        f"(limit {n['nl_deadline']:.0f} s, stall {n['nl_stall']:.0f} s), 5 banners"
        f" ({'pinned: clients on CPU 0, the runs on CPU 1' if pinned() else 'not pinned'})"
    )
    return measure_and_report(a, env, meta, lambda: bench(env, n, a.host_addr, upns), render)

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Egress and published ports, per mode (python3 stdlib only).

Started by bench/egress/run as root inside a sandbox (new network, mount
and PID namespaces, a private tmpfs on /run): the sandbox's network
namespace is the "host". This file builds a veth to a throwaway "upstream"
namespace and measures, side by side in one run:

1. egress: a client inside `pelagos-net run --network MODE` (as the
   unprivileged user; bridge as root) against a server in the upstream
   namespace: download throughput (the CI case: a run pulling data), and
   connect latency (connect+close, connect+1-byte echo+close), each against
   the very same client run directly in the host namespace (the host's own
   connection to the same server). Ratios are per round (ours and the
   host's measured back to back), median and half the inter-quartile range.
   The client also reports the MTU and queue length of each interface it
   sees.
2. published ports: a sink/echo server as the command of a run with
   `-p 127.0.0.1:H:8080`, clients on the host's 127.0.0.1:H, against the
   same server started directly on the host's loopback.

Roles of this file: `--client SPEC` (the measuring client, JSON on
stdout), `--upstream-server PORT`, `--serve PORT` (the server inside a
run), and by default the orchestrator.

Modes (`--modes`, separated by commas, or by semicolons when a row has
helper options): pasta, slirp4netns, bridge, and any
`MODE+accel` (the same with `--accel socket`), `root-MODE` (run as root
instead of the user) or `MODE:OPTS` (helper options, e.g.
`slirp4netns:mtu=1500`) variant.
"""

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time

from benchlib import (
    LOOPBACK,
    BenchError,
    Local,
    UserEnv,
    arg_parser,
    conn_close,
    conn_echo_close,
    measure_and_report,
    median,
    pct,
    setns,
    table,
    verdict,
    wait_exit,
)

HOST_ADDR, UP_ADDR = "10.238.0.2", "10.238.0.1"
UP_PORT, NS_PORT = 9000, 8080
CHUNK = 1 << 20
DEFAULT_MODES = "pasta,slirp4netns,bridge,slirp4netns+accel,root-pasta,root-pasta+accel,root-slirp4netns+accel"
GOAL_EGRESS, GOAL_CONNECT, GOAL_PUBLISHED = 0.9, 1.2, 0.9

# --------------------------------------------------------------------------
# servers (single-threaded selectors loops)


def serve(port, bind):
    """On `port`, by the first byte: b"D" + 8-byte size: send that many bytes
    and close (a download); b"S": count until EOF, answer the count (an
    upload); b"E": echo until EOF; EOF: close."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((bind, port))
    ls.listen(1024)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    payload = memoryview(bytearray(b"\x5a" * CHUNK))
    sink = bytearray(CHUNK)
    state = {}  # socket -> [mode, header bytes, count or bytes left]

    def close(s):
        sel.unregister(s)
        state.pop(s, None)
        s.close()

    def on_read(s, st):
        if st[0] == "S":
            n = s.recv_into(sink)
            if n:
                st[2] += n
                return
            s.setblocking(True)
            s.sendall(str(st[2]).encode())
            return close(s)
        data = s.recv(65536)
        if not data:
            return close(s)
        if st[0] == "E":
            s.setblocking(True)
            s.sendall(data)
            return s.setblocking(False)
        st[1] += data
        if st[1][:1] == b"E":
            st[0], rest = "E", st[1][1:]
            if rest:
                s.setblocking(True)
                s.sendall(rest)
                s.setblocking(False)
        elif st[1][:1] == b"S":
            st[0], st[2] = "S", len(st[1]) - 1
        elif st[1][:1] == b"D" and len(st[1]) >= 9:
            st[0], st[2] = "D", struct.unpack("!Q", st[1][1:9])[0]
            sel.modify(s, selectors.EVENT_WRITE, None)
        elif st[1][:1] not in (b"D",):
            close(s)

    def on_write(s, st):
        while st[2] > 0:
            try:
                n = s.send(payload[: min(CHUNK, st[2])])
            except BlockingIOError:
                return
            st[2] -= n
        close(s)

    while True:
        for key, events in sel.select():
            s = key.fileobj
            if s is ls:
                try:
                    c, _ = ls.accept()
                except OSError:
                    continue
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                c.setblocking(False)
                state[c] = [None, b"", 0]
                sel.register(c, selectors.EVENT_READ, None)
                continue
            st = state.get(s)
            if st is None:
                continue
            try:
                (on_write if events & selectors.EVENT_WRITE else on_read)(s, st)
            except OSError:
                close(s)


# --------------------------------------------------------------------------
# the measuring client (inside a run, or directly on the host)


SIOCGIFMTU, SIOCGIFTXQLEN = 0x8921, 0x8942


def links(qlen=None):
    """Name, MTU and transmit queue length of every interface but lo; with
    qlen, the queue length is set first (the command has CAP_NET_ADMIN in
    its own namespaces)."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        import fcntl

        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            if qlen:
                subprocess.run(["ip", "link", "set", name, "txqueuelen", str(qlen)], check=True)
            req = struct.pack("16si12x", name.encode(), 0)
            mtu = struct.unpack("16si12x", fcntl.ioctl(s, SIOCGIFMTU, req))[1]
            queue = struct.unpack("16si12x", fcntl.ioctl(s, SIOCGIFTXQLEN, req))[1]
            out.append({"name": name, "mtu": mtu, "qlen": queue})
    return out


def download(addr, nbytes, timeout):
    """MiB/s from connect to the last byte of nbytes sent by the server, or
    the failure as a string."""
    buf = bytearray(CHUNK)
    t0 = time.perf_counter()
    got = 0
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(b"D" + struct.pack("!Q", nbytes))
            while True:
                n = s.recv_into(buf)
                if not n:
                    break
                got += n
                if time.perf_counter() - t0 > timeout:
                    return f"timeout after {got >> 20} MiB"
    except OSError as e:
        return f"{e!r} after {got >> 20} MiB"
    secs = time.perf_counter() - t0
    if got != nbytes:
        return f"got {got} of {nbytes} bytes"
    return got / (1 << 20) / secs


def client(spec):
    addr = tuple(spec["addr"])
    res = {"links": links(spec.get("qlen")), "download": [], "errors": []}
    local = Local()
    # A connect the helper never answers fails in 5 s instead of hanging.
    socket.setdefaulttimeout(5.0)
    for key, loop in (("conn_us", conn_close), ("conn_echo_us", conn_echo_close)):
        try:
            loop(local, addr, 20)  # warm-up (ARP, route and socket caches)
            res[key] = loop(local, addr, spec["conn"])
        except OSError as e:
            res["errors"].append(f"{key}: {e!r}")
    for _ in range(spec["downloads"]):
        x = download(addr, spec["bytes"], spec["timeout"])
        (res["download"] if isinstance(x, float) else res["errors"]).append(x)
    print(json.dumps(res), flush=True)


# --------------------------------------------------------------------------
# the orchestrator


class Mode:
    """One row: `pasta`, `slirp4netns:mtu=1500`, `bridge`, `pasta+accel`,
    `slirp4netns@qlen=5000` (the command sets its interfaces' transmit queue
    length before it measures) ..."""

    def __init__(self, name):
        self.name = name
        as_root = name.startswith("root-")
        base, _, tune = name.removeprefix("root-").partition("@")
        self.qlen = int(tune.removeprefix("qlen=")) if tune else None
        base = base.removesuffix("+accel")
        self.accel = base != name.removeprefix("root-").partition("@")[0]
        self.network = base
        self.root = as_root or base.split(":")[0] == "bridge"

    def published(self):
        """Whether the row is measured for published ports too (variants
        that only tune egress are not)."""
        return self.qlen is None and ":" not in self.network

    def run_args(self):
        args = ["--network", self.network]
        return args + (["--accel", "socket"] if self.accel else [])


class Bench:
    def __init__(self, a):
        self.a = a
        self.env = UserEnv(a)
        self.run_dir = a.run_dir
        self.root_dirs = ["--run-dir", "/run/pelagos-bench/root-run", "--netns-dir", a.netns_dir,
                          "--config-dir", "/run/pelagos-bench/config"]
        self.procs = []

    def spawn(self, argv, root=False, stdout=subprocess.DEVNULL):
        if root:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=self.env.log, close_fds=True)
        else:
            p = self.env.spawn(argv, stdout=stdout)
        self.procs.append(p)
        return p

    def pelagos(self, mode, command, ports=()):
        dirs = self.root_dirs if mode.root else ["--run-dir", self.run_dir]
        argv = [self.a.bin, *dirs, "run", *mode.run_args()]
        for p in ports:
            argv += ["-p", p]
        return argv + ["--", "/usr/bin/python3", os.path.join(self.a.workdir, "bench.py"), *command]

    def topology(self):
        def ip(*args):
            subprocess.run(["ip", *args], check=True)

        os.makedirs("/run/netns", exist_ok=True)
        os.makedirs("/run/pelagos-bench/netns", exist_ok=True)
        os.makedirs(self.run_dir, mode=0o700)
        os.chown(self.run_dir, self.a.uid, self.a.gid)
        ip("link", "set", "lo", "up")
        ip("netns", "add", "up")
        ip("link", "add", "eg-h", "type", "veth", "peer", "name", "eg-u", "netns", "up")
        ip("addr", "add", f"{HOST_ADDR}/24", "dev", "eg-h")
        ip("link", "set", "eg-h", "up")
        ip("-n", "up", "addr", "add", f"{UP_ADDR}/24", "dev", "eg-u")
        ip("-n", "up", "link", "set", "eg-u", "up")
        ip("-n", "up", "link", "set", "lo", "up")
        ip("route", "add", "default", "via", UP_ADDR)
        up = os.open("/run/netns/up", os.O_RDONLY | os.O_CLOEXEC)
        argv = ["/usr/bin/python3", os.path.join(self.a.workdir, "bench.py"), "--upstream-server", str(UP_PORT)]
        p = subprocess.Popen(argv, preexec_fn=lambda: setns(up), pass_fds=(up,), stderr=self.env.log)
        self.procs.append(p)
        wait_listening((UP_ADDR, UP_PORT), p)

    def client_once(self, mode, spec):
        """The client's JSON, run directly (mode None) or inside a run."""
        spec = dict(spec, qlen=mode.qlen if mode else None)
        command = ["--client", json.dumps(spec)]
        if mode is None:
            argv = ["/usr/bin/python3", os.path.join(self.a.workdir, "bench.py"), *command]
            p = self.spawn(argv, stdout=subprocess.PIPE)
        else:
            p = self.spawn(self.pelagos(mode, command), root=mode.root, stdout=subprocess.PIPE)
        out, _ = p.communicate(timeout=spec["timeout"] * (spec["downloads"] + 2) + 60)
        if p.returncode != 0:
            raise BenchError(f"{mode.name if mode else 'host'} client exited {p.returncode}\n{self.env.log_tail()}")
        return json.loads(out.decode().strip().splitlines()[-1])

    def egress(self, modes, n):
        spec = {"addr": [UP_ADDR, UP_PORT], "bytes": n["bytes"], "downloads": n["downloads"],
                "conn": n["conn"], "timeout": n["timeout"]}
        keys = ["host"] + [m.name for m in modes]
        by = {m.name: m for m in modes}
        out = {k: [] for k in keys}
        for rnd in range(n["rounds"]):
            print(f"[egress] round {rnd + 1}/{n['rounds']}", file=sys.stderr, flush=True)
            order = keys[rnd % len(keys):] + keys[: rnd % len(keys)]
            for k in order:
                out[k].append(self.client_once(by.get(k), spec))
        return out

    def published(self, modes, n):
        modes = [m for m in modes if m.published()]
        servers = {"direct": self.spawn(["/usr/bin/python3", os.path.join(self.a.workdir, "bench.py"),
                                         "--serve", "18000", "--bind", LOOPBACK])}
        ports = {"direct": 18000}
        for i, m in enumerate(modes):
            ports[m.name] = 18001 + i
            servers[m.name] = self.spawn(
                self.pelagos(m, ["--serve", str(NS_PORT)], [f"127.0.0.1:{ports[m.name]}:{NS_PORT}"]), root=m.root)
        try:
            for k, p in servers.items():
                wait_listening((LOOPBACK, ports[k]), p, echo=True)
            keys = list(servers)
            local = Local()
            res = {k: {"mib_s": [], "conn_us": [], "conn_echo_us": []} for k in keys}
            for rnd in range(n["rounds"]):
                print(f"[published] round {rnd + 1}/{n['rounds']}", file=sys.stderr, flush=True)
                order = keys[rnd % len(keys):] + keys[: rnd % len(keys)]
                for k in order:
                    addr = (LOOPBACK, ports[k])
                    res[k]["mib_s"].append(upload(addr, n["bytes"], n["timeout"]))
                    res[k]["conn_us"].append(median(conn_close(local, addr, n["conn"])))
                    res[k]["conn_echo_us"].append(median(conn_echo_close(local, addr, n["conn"])))
            return res
        finally:
            for p in servers.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                wait_exit(p, 10.0)

    def measure(self, modes, n):
        try:
            self.topology()
            return {"egress": self.egress(modes, n), "published": self.published(modes, n), "iterations": n,
                    "modes": [m.name for m in modes]}
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    wait_exit(p, 10.0)


def upload(addr, nbytes, timeout):
    """MiB/s from connect until the sink has counted nbytes (its answer after
    our half-close), or None."""
    buf = memoryview(bytearray(b"\xa5" * CHUNK))
    t0 = time.perf_counter()
    try:
        with socket.create_connection(addr, timeout=timeout) as s:
            s.sendall(b"S")
            left = nbytes
            while left:
                left -= s.send(buf[: min(CHUNK, left)])
            s.shutdown(socket.SHUT_WR)
            reply = b"".join(iter(lambda: s.recv(64), b""))
    except OSError:
        return None
    if reply != str(nbytes).encode():
        return None
    return nbytes / (1 << 20) / (time.perf_counter() - t0)


def answers(addr, echo):
    """Whether a server listens at addr (and, with echo, echoes a byte)."""
    try:
        with socket.create_connection(addr, timeout=0.5) as s:
            return not echo or (s.sendall(b"Ex") or s.recv(1) == b"x")
    except OSError:
        return False


def wait_listening(addr, proc, limit=20.0, echo=False):
    deadline = time.monotonic() + limit
    while not answers(addr, echo):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"server for {addr} not answering (exit status {proc.poll()})")
        time.sleep(0.02)


# --------------------------------------------------------------------------
# report


def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return median(xs), (pct(xs, 75) - pct(xs, 25)) / 2


def fmt(v, nd=0):
    return "-" if v is None else f"{v:.{nd}f}"


def ratio_cell(r, q):
    return "-" if r is None else f"{r:.2f} ±{q:.2f}"


def render(res, meta):
    eg, host = res["egress"], res["egress"]["host"]
    rows = []

    def per_round(k, f):
        return [f(x, h) for x, h in zip(eg[k], host)]

    def med(xs):
        return median(xs) if xs else None

    for k in res["modes"]:
        accel = k.endswith("+accel")
        tp = per_round(k, lambda x, h: med(x["download"]) / med(h["download"]) if x["download"] and h["download"] else None)
        cc = per_round(k, lambda x, h: med(x["conn_us"]) / med(h["conn_us"]) if x.get("conn_us") and h.get("conn_us") else None)
        ce = per_round(k, lambda x, h: med(x["conn_echo_us"]) / med(h["conn_echo_us"]) if x.get("conn_echo_us") and h.get("conn_echo_us") else None)
        ours = [med(x["download"]) for x in eg[k]]
        (r, q), (rc, qc), (re, qe) = spread(tp), spread(cc), spread(ce)
        ok = [r is not None and r >= GOAL_EGRESS, rc is not None and rc <= GOAL_CONNECT]
        rows.append((f"{k} download (MiB/s)", fmt(spread(ours)[0]), fmt(spread([med(h["download"]) for h in host])[0]),
                     ratio_cell(r, q), f">= {GOAL_EGRESS}" if accel else "-", verdict(ok[0]) if accel else "info"))
        rows.append((f"{k} connect+close p50 (us)", fmt(spread([med(x.get("conn_us") or [0]) for x in eg[k]])[0], 1),
                     fmt(spread([med(h.get("conn_us") or [0]) for h in host])[0], 1), ratio_cell(rc, qc),
                     f"<= {GOAL_CONNECT}" if accel else "-", verdict(ok[1]) if accel else "info"))
        rows.append((f"{k} connect+echo+close p50 (us)", fmt(spread([med(x.get("conn_echo_us") or [0]) for x in eg[k]])[0], 1),
                     fmt(spread([med(h.get("conn_echo_us") or [0]) for h in host])[0], 1), ratio_cell(re, qe), "-", "info"))
    lines = [meta, "", "1. egress: a client in the run -> a server in the upstream namespace, against the host's own connection",
             *table(("measure", "ours", "host", "ratio", "goal", "result"), rows, {0, 4})]
    links = []
    for k in ["host"] + res["modes"]:
        seen = {f"{l['name']} mtu {l['mtu']} qlen {l['qlen']}" for x in eg[k] for l in x["links"]}
        errors = [e for x in eg[k] for e in x["errors"]]
        links.append(f"  {k}: {', '.join(sorted(seen)) or '-'}" + (f"; {len(errors)} failed: {errors[0]}" if errors else ""))
    lines += ["", "interfaces seen by the client (tap or veth: MTU, transmit queue length):", *links]
    pub, rows = res["published"], []
    d = pub["direct"]
    for k in [m for m in res["modes"] if m in pub]:
        accel = k.endswith("+accel")
        tp = [x / y if x and y else None for x, y in zip(pub[k]["mib_s"], d["mib_s"])]
        r, q = spread(tp)
        rows.append((f"{k} throughput (MiB/s)", fmt(spread(pub[k]["mib_s"])[0]), fmt(spread(d["mib_s"])[0]),
                     ratio_cell(r, q), f">= {GOAL_PUBLISHED}" if accel else "-",
                     verdict(r is not None and r >= GOAL_PUBLISHED) if accel else "info"))
        for key, what in (("conn_us", "connect+close"), ("conn_echo_us", "connect+echo+close")):
            rr = [x / y for x, y in zip(pub[k][key], d[key])]
            rows.append((f"{k} {what} p50 (us)", fmt(median(pub[k][key]), 1), fmt(median(d[key]), 1),
                         ratio_cell(*spread(rr)), "-", "info"))
    lines += ["", "2. published ports: a client on the host's 127.0.0.1 -> the server in the run, against a direct loopback connection",
              *table(("measure", "ours", "direct", "ratio", "goal", "result"), rows, {0, 4})]
    return "\n".join(lines)


def main():
    ap = arg_parser(pidfile_required=False)
    ap.add_argument("--sandbox", action="store_true")
    ap.add_argument("--client")
    ap.add_argument("--upstream-server", type=int)
    ap.add_argument("--serve", type=int)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--modes", default=DEFAULT_MODES)
    a = ap.parse_args()
    if a.client:
        return client(json.loads(a.client))
    if a.upstream_server:
        return serve(a.upstream_server, "0.0.0.0")
    if a.serve:
        return serve(a.serve, a.bind)
    if not a.sandbox or os.getpid() != 1:
        raise SystemExit("bench.py: started by bench/egress/run only (it needs the sandbox)")
    # The sandbox's own /run: netns names, run records and leases live and
    # die with it.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "pelagos-egress-bench", "/run"], check=True)
    import pwd

    pw = pwd.getpwnam(a.user)
    a.uid, a.gid, a.pidfile = pw.pw_uid, pw.pw_gid, os.path.join(a.workdir, "pids")
    a.run_dir, a.netns_dir = "/run/pelagos-bench/run", "/run/pelagos-bench/netns"
    n = {"rounds": 3, "downloads": 1, "bytes": 64 << 20, "conn": 50, "timeout": 20.0} if a.quick else \
        {"rounds": 8, "downloads": 2, "bytes": 512 << 20, "conn": 200, "timeout": 60.0}
    have_accel = b"--accel" in subprocess.run([a.bin, "run", "--help"], capture_output=True).stdout
    # Rows are comma-separated, or semicolon-separated when one holds helper options.
    names = a.modes.split(";" if ";" in a.modes else ",")
    modes = [Mode(m) for m in names if m and (have_accel or "+accel" not in m)]
    b = Bench(a)
    meta = (f"pelagos-net egress bench  kernel {os.uname().release}  cpus {os.cpu_count()}  user {a.user} ({a.uid})  "
            f"mode {'quick' if a.quick else 'full'}\n{a.label}\n"
            f"iterations: {n['rounds']} rounds; per round and row {n['downloads']} x {n['bytes'] >> 20} MiB, "
            f"{n['conn']} connects of each kind")
    return measure_and_report(a, b.env, meta, lambda: b.measure(modes, n), render)


if __name__ == "__main__":
    sys.exit(main())

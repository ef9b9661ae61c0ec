#!/usr/bin/python3
"""Timing logic of the DNS benchmark (python3 stdlib only).

Started by bench/dns/run as root inside the throwaway host network
namespace, in a mount namespace whose /etc/resolv.conf names the local
dnsmasq on 127.0.0.53 (a stub resolver, as systemd-resolved's). Measures,
side by side in one run:

1. query latency: the same query (an A record dnsmasq answers itself),
   sent by the same client, directly to 127.0.0.53 from the host namespace
   and from inside pelagos-net runs in pasta, slirp4netns and bridge mode
   (and through the forwarder inside the namespace that `--dns` with a
   second loopback server uses), and from a run on a rootless shared
   network (the user's holder serves its names: an upstream name
   forwarded, and a run's name answered from its table); p50 and p90,
   ratios against direct; and (`upstream`) never-asked names the stub
   forwards to an authoritative server in the upstream netns, across a
   veth and across a delayed one (`--delay-relay` is that delay where the
   kernel has no netem);
2. what the private mount namespace (resolv.conf and hosts mounted over
   /etc) adds to `run` start-up: loopback mode without it and with it
   (`--add-host` forces it), against `unshare -Urn true`;
3. what our forwarder inside the namespace (the default in pasta and
   slirp4netns runs) adds to launch, spawn to the command's first
   instruction, against the same run with the mode's own forwarder
   (`PELAGOS_DNS_CACHE=helper`).

Every query path is measured cold and warm in the same client: a cold
query asks a name never asked before (a real round trip to the resolver,
through every forwarder on the way), a warm one repeats the same query (what
a forwarder's cache may answer), interleaved one for one. The goal is judged
on the warm figure (the issue's "the same query"); both are printed, side by
side, so a cache hit is never mistaken for a faster path.

`bench.py --query ADDR N NAME COLD` is the query client: N queries one after
the other (after a warm-up), interleaved with N cold ones when COLD is 1,
latencies in microseconds as JSON on stdout; ADDR `auto` is the first
nameserver of /etc/resolv.conf.

BENCH_ONLY (comma-separated path ids, and/or `upstream`, `startup`, `launch`) measures
only those (direct is always measured: every ratio needs it).
"""

import json
import os
import random
import socket
import struct
import subprocess
import sys
import time

from benchlib import (
    BenchError,
    UserEnv,
    arg_parser,
    become_subreaper,
    cleanup_mode,
    measure_and_report,
    median,
    pct,
    reap_all,
    table,
    verdict,
    wait_exit,
)

NAME = "www.bench.test"
# Cold queries ask a fresh name under this zone each time (the resolver
# answers the whole zone itself).
COLD_ZONE = "bench.test"
# A run's name on the bridge network, answered by the gateway forwarder itself.
RUN_NAME = "bench-db"
HOLDER_NET = "hb"
HOLDER_SUBNET = "10.90.1.0/24"
HOLDER_RUN_NAME = "holder-db"
GOAL_QUERY = 1.5
GOAL_STARTUP = 1.30


# --------------------------------------------------------------------------
# the query client (runs as the command inside a run, or directly)


def first_nameserver():
    with open("/etc/resolv.conf") as f:
        for line in f:
            w = line.split()
            if len(w) >= 2 and w[0] == "nameserver":
                return w[1]
    raise SystemExit("no nameserver in /etc/resolv.conf")


def query_bytes(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)


def query_client(addr, n, name, cold, zones=()):
    """n warm queries (`name`, the same query each time, after a warm-up
    of 50) and, with `cold`, n cold ones interleaved (a name never asked
    before, in the zone the resolver answers itself: a real round trip to
    it through every forwarder and cache on the way). With `zones` (the
    upstream section) only a name never asked before in each zone, in
    turn, n of each after 10 of each to warm up; no warm or cold ones."""
    addr = first_nameserver() if addr == "auto" else addr
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    s.connect((addr, 53))
    tag = f"{random.getrandbits(40):010x}"

    def one(qname):
        qid = random.getrandbits(16)
        q = query_bytes(qid, qname)
        t0 = time.perf_counter_ns()
        s.send(q)
        while True:
            r = s.recv(4096)
            if struct.unpack(">H", r[:2])[0] == qid:
                break
        dt = time.perf_counter_ns() - t0
        if r[3] & 0x0F != 0 or struct.unpack(">H", r[6:8])[0] == 0:
            raise SystemExit(f"bad answer from {addr} for {qname}: rcode {r[3] & 0x0F}")
        return dt / 1e3

    for _ in range(50):
        one(name)
    if zones:
        for i in range(10):
            for z in zones:
                one(f"w{tag}-{i}.{z}")
        got = [[one(f"c{tag}-{i}.{z}") for z in zones] for i in range(n)]
        json.dump({"server": addr, "zones": {z: [g[j] for g in got] for j, z in enumerate(zones)}}, sys.stdout)
        return 0
    warm, cold_us = [], []
    for i in range(n):
        if cold:
            cold_us.append(one(f"c{tag}-{i}.{COLD_ZONE}"))
        warm.append(one(name))
    json.dump({"server": addr, "warm": warm, "cold": cold_us}, sys.stdout)
    return 0


def delay_relay(listen, upstream, delay_ms):
    """The far upstream hop's delay where the kernel has no netem: in the
    upstream netns, hold each query delay_ms, then pass it on to the
    authoritative server and its answer back (one query at a time: the
    stub forwards the client's queries one after the other)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((listen, 53))
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.settimeout(2.0)
    up.connect((upstream, 53))
    while True:
        q, peer = s.recvfrom(4096)
        time.sleep(delay_ms / 1e3)
        up.send(q)
        try:
            s.sendto(up.recv(4096), peer)
        except socket.timeout:
            pass


# --------------------------------------------------------------------------
# measuring


class Bench:
    def __init__(self, a, env):
        self.a, self.env = a, env
        self.me = os.path.abspath(__file__)

    def user_run(self, args):
        return [self.a.bin, "--run-dir", self.a.run_dir, "--netns-dir", self.a.netns_dir, "run"] + args

    def holder_cmd(self, args):
        """A rootless command whose networks live in the user's network holder."""
        return [self.a.bin, "--run-dir", self.a.run_dir, "--netns-dir", self.a.netns_dir, "--config-dir",
                self.holder_config()] + args

    def holder_config(self):
        d = os.path.join(self.a.workdir, "holder-config")
        if not os.path.isdir(d):
            os.mkdir(d, 0o700)
            os.chown(d, self.a.uid, self.a.gid)
            p = self.env.spawn(self.holder_cmd_raw(d, ["network", "create", "--subnet", HOLDER_SUBNET, HOLDER_NET]))
            self.env.tracker.add(p.pid)
            if wait_exit(p, 30) != 0:
                raise BenchError("network create for the holder paths failed")
        return d

    def holder_cmd_raw(self, config, args):
        return [self.a.bin, "--run-dir", self.a.run_dir, "--netns-dir", self.a.netns_dir, "--config-dir",
                config] + args

    def root_run(self, args):
        d = self.a.root_dir
        return [self.a.bin, "--run-dir", f"{d}/run", "--netns-dir", f"{d}/netns", "--config-dir", f"{d}/config",
                "run"] + args

    def spawn_root(self, argv, stdout, env=None):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=self.env.log, close_fds=True,
                             env=env or self.env.env, cwd=self.a.workdir)
        self.env.tracker.add(p.pid)
        return p

    def spawn_user(self, argv, env):
        """argv as the bench user with env, stdout piped."""
        p = subprocess.Popen(argv, user=self.a.uid, group=self.a.gid, extra_groups=[], env=env,
                             cwd=self.a.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=self.env.log, close_fds=True)
        self.env.tracker.add(p.pid)
        return p

    def queries(self, path, n, zones=()):
        """One round of n queries (warm, and cold where the path forwards) on
        one path; microseconds: {"warm": [...], "cold": [...]}; with `zones`,
        n never-asked names in each zone instead: {zone: [...]}."""
        name = {"names": RUN_NAME, "holder-names": HOLDER_RUN_NAME}.get(path, NAME)
        # A run's name is answered from a table, never from upstream: no cold query.
        cold = "0" if path in ("names", "holder-names") else "1"
        client = ["/usr/bin/python3", self.me, "--query", "auto", str(n), name, "0" if zones else cold]
        client += [",".join(zones)] if zones else []
        # PELAGOS_DNS_CACHE for the "-helper" paths (pasta's or libslirp's
        # own forwarder) and "-off" (no cache).
        base, _, policy = path.partition("-")
        extra = {"PELAGOS_DNS_CACHE": policy} if policy in ("helper", "off") else {}
        base = path if path.startswith("holder") else base
        root = base in ("bridge", "names")
        if path == "direct":
            argv = client[:3] + ["127.0.0.53"] + client[4:]
        elif root:
            argv = self.root_run(["--network", "bridge", "--"] + client)
        elif base in ("holder", "holder-names"):
            argv = self.holder_cmd(["run", "--network", HOLDER_NET, "--"] + client)
        else:
            argv = self.user_run(["--network", base, "--"] + client)
        env = dict(self.env.env, **extra)
        p = self.spawn_root(argv, subprocess.PIPE, env) if root else self.spawn_user(argv, env)
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise BenchError(f"{path}: query client failed (status {p.returncode})")
        got = json.loads(out)
        return got["zones"] if zones else {"warm": got["warm"], "cold": got["cold"]}

    def start_named(self, path):
        """A run named on its network, for the names paths (on the holder
        network: it keeps the holder warm for both holder paths); returns
        once its name resolves."""
        if path == "names":
            argv = self.root_run(["--network", "bridge", "--name", RUN_NAME, "--", "sleep", "3600"])
            p = self.spawn_root(argv, subprocess.DEVNULL)
        else:
            argv = self.holder_cmd(["run", "--network", HOLDER_NET, "--name", HOLDER_RUN_NAME, "--", "sleep", "3600"])
            p = self.env.spawn(argv)
            self.env.tracker.add(p.pid)
        ask = "names" if path == "names" else "holder-names"
        for _ in range(100):
            try:
                self.queries(ask, 1)
                return p
            except BenchError:
                if p.poll() is not None:
                    raise BenchError(f"the named run exited (status {p.returncode})")
                time.sleep(0.1)
        raise BenchError(f"{RUN_NAME} never resolved")

    def path_queries(self, path, n, zones=()):
        """One round on one path; the names path with its named run alive
        for the round only (reap_all between rounds kills what is left)."""
        if path not in ("names", "holder", "holder-names"):
            return self.queries(path, n, zones)
        named = self.start_named(path)
        try:
            return self.queries(path, n, zones)
        finally:
            named.terminate()
            wait_exit(named, 30)

    def launch(self, which):
        """Spawn to the command's first instruction, milliseconds: `which`
        is MODE or MODE-helper."""
        mode, _, policy = which.partition("-")
        env = dict(self.env.env, PELAGOS_DNS_CACHE=policy or "on")
        argv = self.user_run(["--network", mode, "--", "date", "+%s%N"])
        t0 = time.time()
        out, _ = self.spawn_user(argv, env).communicate(timeout=60)
        if not out.strip():
            raise BenchError(f"launch {which}: the command printed nothing")
        return (int(out) / 1e9 - t0) * 1e3

    def startup(self, which):
        """Spawn to reaped, milliseconds."""
        if which == "unshare":
            argv = ["unshare", "--user", "--map-root-user", "--net", "true"]
        elif which == "plain":
            argv = self.user_run(["--network", "loopback", "--", "true"])
        else:
            argv = self.user_run(["--network", "loopback", "--add-host", "bench-host:10.0.0.1", "--", "true"])
        t0 = time.perf_counter()
        p = self.env.spawn(argv)
        self.env.tracker.add(p.pid)
        code = wait_exit(p, 30)
        dt = (time.perf_counter() - t0) * 1e3
        if code != 0:
            raise BenchError(f"start-up {which}: status {code}")
        return dt


PATHS = [
    ("direct", "direct to the stub 127.0.0.53"),
    ("pasta", "pasta: 169.254.1.1 (our caching forwarder in the netns)"),
    ("slirp4netns", "slirp4netns: 169.254.1.1 (ditto)"),
    ("bridge", "bridge: 10.90.0.1 (our caching forwarder on the gateway, root)"),
    ("pasta-helper", "pasta, PELAGOS_DNS_CACHE=helper: 169.254.1.1 (pasta's --dns-forward)"),
    ("slirp4netns-helper", "slirp4netns, PELAGOS_DNS_CACHE=helper: 10.0.2.3 (libslirp)"),
    ("bridge-off", "bridge, PELAGOS_DNS_CACHE=off: 10.90.0.1 (our forwarder, no cache)"),
    ("names", "bridge: a run's name (our forwarder's own table)"),
    ("holder", "rootless network: 10.90.1.1 (the holder's name server, caching)"),
    ("holder-names", "rootless network: a run's name (the holder's table)"),
]
# The upstream section: the stub on 127.0.0.53 has no answer of its own for
# these zones and forwards every name to an authoritative dnsmasq in the
# throwaway upstream netns, across a veth (NEAR) and across a veth with a
# delay (FAR; how it is delayed: --upstream-delay).
NEAR_ZONE = "near.test"
FAR_ZONE = "far.test"
UPSTREAM_PATHS = [
    ("direct", "direct: the client in the host netns to the stub 127.0.0.53"),
    ("pasta", "pasta (our caching forwarder in the netns)"),
    ("slirp4netns", "slirp4netns (ditto)"),
    ("bridge", "bridge (our caching forwarder on the gateway, root)"),
    ("holder", "rootless network (the holder's name server)"),
]
STARTUPS = [("plain", "run --network loopback -- true"), ("mount", "... --add-host (private mount ns)"),
            ("unshare", "unshare -Urn true")]
LAUNCHES = [("pasta", "run --network pasta (our forwarder inside)"),
            ("pasta-helper", "... PELAGOS_DNS_CACHE=helper (pasta's own)"),
            ("slirp4netns", "run --network slirp4netns (our forwarder inside)"),
            ("slirp4netns-helper", "... PELAGOS_DNS_CACHE=helper (libslirp's own)")]


def selected():
    """BENCH_ONLY: the path ids (and `upstream`, `startup`, `launch`) to measure; direct always."""
    only = {w.strip() for w in os.environ.get("BENCH_ONLY", "").split(",") if w.strip()}
    known = {p for p, _ in PATHS} | {"upstream", "startup", "launch"}
    if only - known:
        raise SystemExit(f"BENCH_ONLY: unknown {sorted(only - known)}; known: {sorted(known)}")
    paths = [p for p, _ in PATHS if not only or p in only or p == "direct"]
    return paths, {s for s in ("upstream", "startup", "launch") if not only or s in only}


def bench(b, n):
    paths, sections = selected()
    res = {"queries": {p: {"warm": [], "cold": []} for p in paths}, "startup": {s: [] for s, _ in STARTUPS},
           "launch": {s: [] for s, _ in LAUNCHES}, "upstream": {}}
    for _ in range(n["rounds"]):
        for path in paths:
            got = b.path_queries(path, n["queries"])
            for k in ("warm", "cold"):
                res["queries"][path][k].extend(got[k])
        reap_all()
    for _ in range(n["rounds"] if "upstream" in sections else 0):
        for path, _ in UPSTREAM_PATHS:
            got = b.path_queries(path, n["upstream"], (NEAR_ZONE, FAR_ZONE))
            for zone, xs in got.items():
                res["upstream"].setdefault(path, {}).setdefault(zone, []).extend(xs)
        reap_all()
    startups, launches = "startup" in sections, "launch" in sections
    for _ in range(n["startups"] if startups else 0):
        for which, _ in STARTUPS:
            res["startup"][which].append(b.startup(which))
    reap_all()
    for i in range(n["launches"] if launches else 0):
        for which, _ in LAUNCHES if i % 2 == 0 else reversed(LAUNCHES):
            res["launch"][which].append(b.launch(which))
    reap_all()
    return res


def query_rows(q):
    """One row per path: cold and warm p50/p90, each against direct's."""
    d = {k: (median(q["direct"][k]), pct(q["direct"][k], 90)) for k in ("warm", "cold")}
    rows = []
    for path, label in PATHS:
        if path not in q:
            continue
        row = [label]
        for k in ("cold", "warm"):
            xs = q[path][k]
            if not xs:
                row += ["-", "-", "", ""]
                continue
            p50, p90 = median(xs), pct(xs, 90)
            ratios = ["", ""] if path == "direct" else [f"{p50 / d[k][0]:.2f}", f"{p90 / d[k][1]:.2f}"]
            row += [f"{p50:.0f}", f"{p90:.0f}"] + ratios
        if path == "direct":
            row += ["", ""]
        else:
            cold = q[path]["cold"]
            row.append(verdict(median(q[path]["warm"]) / d["warm"][0] <= GOAL_QUERY))
            row.append(verdict(median(cold) / d["cold"][0] <= GOAL_QUERY) if cold else "-")
        rows.append(row)
    return rows


def upstream_rows(up, delay):
    """Cold names the stub forwards upstream, undelayed and delayed, per path against direct's."""
    if not up:
        return []
    lines = ["", "query latency, microseconds, cold, the stub forwards upstream: a name never asked before in a zone",
             "  the stub 127.0.0.53 has no answer for, forwarded to an authoritative dnsmasq in the upstream netns,",
             f"  across a veth (near) and across a veth with a delay (far: {delay}); alternating one for one;",
             "  direct = the same client in the host netns to the stub (stub + upstream round trip);",
             f"  goal: p50 ratio <= {GOAL_QUERY}"]
    d = {z: (median(up["direct"][z]), pct(up["direct"][z], 90)) for z in (NEAR_ZONE, FAR_ZONE)}
    rows = []
    for path, label in UPSTREAM_PATHS:
        row = [label]
        for z in (NEAR_ZONE, FAR_ZONE):
            p50, p90 = median(up[path][z]), pct(up[path][z], 90)
            if path == "direct":
                row += [f"{p50:.0f}", f"{p90:.0f}", "", "", ""]
            else:
                row += [f"{p50:.0f}", f"{p90:.0f}", f"{p50 / d[z][0]:.2f}", f"{p90 / d[z][1]:.2f}",
                        verdict(p50 / d[z][0] <= GOAL_QUERY)]
        rows.append(row)
    head = ["path", "near p50", "p90", "x p50", "x p90", "goal", "far p50", "p90", "x p50", "x p90", "goal"]
    return lines + table(head, rows, {0})


def launch_rows(la):
    """Launch to the command's first instruction, our forwarder inside against the mode's own."""
    if not la["pasta"]:
        return []
    lines = ["", "launch, milliseconds, spawn to the command's first instruction (date +%s%N), alternating"]
    rows = [[label, f"{median(la[w]):.2f}", f"{pct(la[w], 90):.2f}"] for w, label in LAUNCHES]
    lines += table(["command", "median", "p90"], rows, {0})
    for mode in ("pasta", "slirp4netns"):
        cost = median(la[mode]) - median(la[f"{mode}-helper"])
        lines.append(f"{mode}: our forwarder inside adds {cost:+.2f} ms to the median launch")
    return lines


def render(res, meta):
    q = res["queries"]
    lines = [
        meta,
        "",
        "query latency, microseconds, same client and server, one run; each path against direct's same column:",
        "  cold = a name never asked before (a real round trip to the resolver through every hop),",
        "  warm = the same query repeated (what a forwarder's cache answers; the goal's \"same query\").",
        f"  goal: p50 ratio <= {GOAL_QUERY}, judged on warm; cold printed beside it for the hops' own cost.",
    ]
    head = ["path", "cold p50", "p90", "x p50", "x p90", "warm p50", "p90", "x p50", "x p90", "goal warm",
            "cold"]
    lines += table(head, query_rows(q), {0})
    if "names" in q and "bridge" in q:
        lines.append(f"a run's name against a forwarded query through the same bridge forwarder: "
                     f"x{median(q['names']['warm']) / median(q['bridge']['cold']):.2f} (p50, against cold)")
    if "holder-names" in q and "names" in q:
        lines.append(f"a run's name on a rootless network against the same on a root bridge: "
                     f"x{median(q['holder-names']['warm']) / median(q['names']['warm']):.2f} (p50)")
    lines += upstream_rows(res["upstream"], res["upstream_delay"])
    lines += launch_rows(res["launch"])
    if not res["startup"]["unshare"]:
        return "\n".join(lines)
    lines += ["", "run start-up, milliseconds, spawn to reaped"]
    s = res["startup"]
    peer = median(s["unshare"])
    rows = []
    for which, label in STARTUPS:
        m = median(s[which])
        ratio = m / peer
        goal = "" if which == "unshare" else f"<= {GOAL_STARTUP}"
        ok = "" if which == "unshare" else verdict(ratio <= GOAL_STARTUP)
        rows.append([label, f"{m:.2f}", f"{pct(s[which], 90):.2f}", f"{ratio:.2f}", goal, ok])
    lines += table(["command", "median", "p90", "x unshare", "goal", ""], rows, {0})
    cost = median(s["mount"]) - median(s["plain"])
    lines.append(f"the private mount namespace adds {cost:+.2f} ms to the median start-up")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--query":
        zones = sys.argv[6].split(",") if len(sys.argv) > 6 else ()
        return query_client(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1", zones)
    if len(sys.argv) > 1 and sys.argv[1] == "--delay-relay":
        return delay_relay(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    ap = arg_parser()
    ap.add_argument("--root-dir", help="run, netns and config dirs of the root (bridge) runs")
    ap.add_argument("--upstream-delay", default="none", help="how the far upstream hop is delayed (for the report)")
    a = ap.parse_args()
    if a.cleanup:
        return cleanup_mode(a)
    become_subreaper()
    n = {"rounds": 2 if a.quick else 8, "queries": 100 if a.quick else 500, "startups": 20 if a.quick else 200,
         "launches": 10 if a.quick else 60, "upstream": 50 if a.quick else 300}
    env = UserEnv(a)
    u = os.uname()
    meta = (
        f"pelagos-net DNS bench  kernel {u.release}  cpus {os.cpu_count()}  user {a.user} ({a.uid})  "
        f"mode {'QUICK' if a.quick else 'full'}\n"
        f"{a.label + chr(10) if a.label else ''}"
        f"queries: {n['rounds']} rounds x {n['queries']} per path (after 50 warm-up), paths alternating; "
        f"start-up: {n['startups']} of each, alternating\n"
        f"resolver: dnsmasq on 127.0.0.53 (and 127.0.0.54) in the throwaway host netns, answering {NAME} itself"
    )
    meta += f"; {NEAR_ZONE} and {FAR_ZONE} forwarded by it upstream (far: {a.upstream_delay})"

    def measure():
        return dict(bench(Bench(a, env), n), upstream_delay=a.upstream_delay)

    return measure_and_report(a, env, meta, measure, render)


if __name__ == "__main__":
    sys.exit(main())

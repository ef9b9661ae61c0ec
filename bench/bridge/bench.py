#!/usr/bin/python3
"""Bridge-networking benchmark: pelagos-net vs `ip` and the CNI plugins.

Driven by bench/bridge/run, which builds the throwaway topology and cleans it
up. This process first joins the throwaway "host" network namespace (setns on
its only thread), so every command it runs (ip, the CNI plugins, the iptables
they call, iperf3) acts inside that namespace; it refuses to run when that
namespace is the machine's own. Our side is the `bench_bridge` example, a
long-lived agent that calls the library in-process and times each call.

The three tools are measured interleaved, container by container (the order
rotates each iteration), so drift and background work (the kernel destroying
namespaces asynchronously) hit them alike.
"""

import argparse
import codecs
import json
import os
import re
import select
import subprocess
import sys
import time

import benchlib
from benchlib import BenchError, setns, table, verdict

CNI_DIR = "/usr/lib/cni"


def log(msg):
    print(f"bench/bridge: {msg}", file=sys.stderr, flush=True)


def ino(path):
    return os.stat(path).st_ino


def enter_netns(path, outer_ino):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, f"setns {path}")
    finally:
        os.close(fd)
    here = ino("/proc/thread-self/ns/net")
    if here != ino(path) or here == outer_ino or ino("/proc/self/ns/net") != here:
        raise BenchError("not inside the throwaway host namespace; refusing to run")


def run(argv, timeout=60, env=None, stdin=None):
    r = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return r


def timed(cmds, timeout=60):
    """Run argv lists one after the other; seconds for all of them."""
    t = time.perf_counter()
    for argv in cmds:
        run(argv, timeout=timeout)
    return time.perf_counter() - t


def median(xs):
    return benchlib.median(xs) if xs else float("nan")


def p90(xs):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


# --- our side: the agent -------------------------------------------------------


class Agent:
    def __init__(self, argv, pidfile, stderr_path):
        self.stderr = open(stderr_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        with open(pidfile, "a") as f:
            f.write(f"{self.proc.pid}\n")

    def cmd(self, line, timeout=120):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise BenchError(f"agent: no answer to {line!r} in {timeout}s")
        out = self.proc.stdout.readline().decode().strip()
        if not out.startswith("ok"):
            raise BenchError(f"agent: {line!r}: {out or 'agent died (see stderr)'}")
        return out.split()[1:]

    def seconds(self, line):
        return int(self.cmd(line)[0]) / 1e9

    def close(self):
        if self.proc.poll() is None:
            try:
                self.cmd("quit", timeout=120)
            finally:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        self.stderr.close()


# --- the peers -------------------------------------------------------------------


class IpPeer:
    """The same topology as ours, built with an `ip` command sequence."""

    BRIDGE = "pbbbr0"
    PREFIX = "10.240.0"

    def __init__(self, tag):
        self.tag = tag

    def setup_bridge(self):
        run(["ip", "link", "add", self.BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.PREFIX}.1/24", "dev", self.BRIDGE])
        run(["ip", "link", "set", self.BRIDGE, "up"])

    def names(self, i):
        return f"pbb-c{self.tag}-i{i}", f"pbbi{i}h", f"pbbi{i}c", f"{self.PREFIX}.{10 + i}"

    def attach_cmds(self, i):
        ns, vh, vc, addr = self.names(i)
        return [
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", vh, "type", "veth", "peer", "name", vc],
            ["ip", "link", "set", vc, "netns", ns],
            ["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", vc],
            ["ip", "-n", ns, "link", "set", vc, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", f"{self.PREFIX}.1"],
            ["ip", "link", "set", vh, "master", self.BRIDGE],
            ["ip", "link", "set", vh, "up"],
        ]

    def attach(self, i):
        return timed(self.attach_cmds(i))

    def teardown(self, i):
        ns, vh, _, _ = self.names(i)
        return timed([["ip", "link", "del", vh], ["ip", "netns", "del", ns]])


class CniPeer:
    """CNI reference plugins (bridge + host-local, chained portmap) via the CNI_* protocol."""

    def __init__(self, tag, name, bridge, subnet, data_dir):
        self.tag, self.name, self.bridge, self.subnet, self.data_dir = tag, name, bridge, subnet, data_dir
        self.prev = {}

    def ns(self, i):
        return f"pbb-c{self.tag}-{self.name[-1]}{i}"

    def cid(self, i):
        return f"pbb{self.tag}{self.name}{i}"

    def env(self, cmd, i):
        return {
            "PATH": benchlib.PATH,
            "CNI_COMMAND": cmd,
            "CNI_CONTAINERID": self.cid(i),
            "CNI_NETNS": f"/run/netns/{self.ns(i)}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_DIR,
        }

    def bridge_conf(self):
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir,
            },
        }

    def portmap_conf(self, i, port):
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "type": "portmap",
            "capabilities": {"portMappings": True},
            "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
            "snat": True,
            "prevResult": self.prev[i],
        }

    def plugin(self, plugin, cmd, i, conf, wrap=()):
        r = run(list(wrap) + [f"{CNI_DIR}/{plugin}"], env=self.env(cmd, i), stdin=json.dumps(conf).encode())
        return r.stdout

    def make_ns(self, i):
        run(["ip", "netns", "add", self.ns(i)])

    def del_ns(self, i):
        run(["ip", "netns", "del", self.ns(i)])

    def add(self, i, port=None):
        """bridge ADD, then (with a port) portmap ADD with bridge's result as prevResult. Seconds."""
        t = time.perf_counter()
        out = self.plugin("bridge", "ADD", i, self.bridge_conf())
        self.prev[i] = json.loads(out)
        if port is not None:
            self.plugin("portmap", "ADD", i, self.portmap_conf(i, port))
        return time.perf_counter() - t

    def delete(self, i, port=None):
        """portmap DEL (with a port), then bridge DEL. Seconds."""
        t = time.perf_counter()
        if port is not None:
            self.plugin("portmap", "DEL", i, self.portmap_conf(i, port))
        conf = self.bridge_conf()
        conf["prevResult"] = self.prev[i]
        self.plugin("bridge", "DEL", i, conf)
        return time.perf_counter() - t


# --- strace accounting -------------------------------------------------------------

NLHDR = re.compile(r"^\d+, nlmsg_type=([^,]+), nlmsg_flags=([^,}]+)")
RAW = re.compile(r'^[^"]*?\}, "((?:\\x[0-9a-f]{2})*)"')
RTM_NEWLINK, RTM_SETLINK = 0x10, 0x13
IFLA_NET_NS_PID, IFLA_NET_NS_FD = 19, 28
NLM_F_CREATE = 0x400


def nl_type(s):
    m = re.match(r"(0x[0-9a-f]+|\d+)", s.strip())
    if m:
        return int(m.group(1), 0)
    return {"RTM_NEWLINK": RTM_NEWLINK, "RTM_SETLINK": RTM_SETLINK}.get(s.split()[0], -1)


def nl_flags(s):
    v = 0
    for tok in s.split("|"):
        tok = tok.strip()
        if tok.startswith("0x"):
            v |= int(tok, 16)
        elif tok == "NLM_F_CREATE":
            v |= NLM_F_CREATE
    return v


def raw_has_netns_attr(hexstr):
    payload = codecs.escape_decode(hexstr)[0][16:]  # skip struct ifinfomsg
    off = 0
    while off + 4 <= len(payload):
        rlen = int.from_bytes(payload[off : off + 2], "little")
        if int.from_bytes(payload[off + 2 : off + 4], "little") & 0x3FFF in (IFLA_NET_NS_FD, IFLA_NET_NS_PID):
            return True
        if rlen < 4:
            return False
        off += (rlen + 3) & ~3
    return False


def link_moves(text):
    """RTM_NEWLINK/RTM_SETLINK requests without NLM_F_CREATE that carry
    IFLA_NET_NS_FD/PID: an existing link moved to another netns. (A veth
    created with its peer directly inside a netns is an NLM_F_CREATE request:
    not a move.) strace decodes rtnetlink only for sockets of its own netns;
    other messages come as raw bytes, whose top-level attributes are parsed."""
    moves = 0
    for line in text.splitlines():
        if "sendto(" not in line and "sendmsg(" not in line:
            continue
        for seg in line.split("{nlmsg_len=")[1:]:
            m = NLHDR.match(seg)
            if not m or nl_type(m.group(1)) not in (RTM_NEWLINK, RTM_SETLINK) or nl_flags(m.group(2)) & NLM_F_CREATE:
                continue
            if "IFLA_NET_NS_FD" in seg or "IFLA_NET_NS_PID" in seg:
                moves += 1
            elif (raw := RAW.match(seg)) and raw_has_netns_attr(raw.group(1)):
                moves += 1
    return moves


def strace_counts(path):
    text = open(path, errors="replace").read()
    execs = [ln for ln in text.splitlines() if re.match(r"^\d+ +execve\(", ln)]
    clones = [ln for ln in text.splitlines() if re.match(r"^\d+ +(clone3?|fork|vfork)\(", ln)]
    threads = sum(1 for ln in clones if "CLONE_THREAD" in ln)
    progs = [codecs.escape_decode(re.search(r'execve\("([^"]+)"', ln).group(1))[0].decode(errors="replace")
             .rsplit("/", 1)[-1] for ln in execs]
    return {"execve": len(execs), "programs": progs, "threads": threads, "procs": len(clones) - threads,
            "link_moves": link_moves(text)}


STRACE = ["strace", "-f", "-z", "-qq", "-xx", "-s", "65536", "-e",
          "trace=execve,clone,clone3,fork,vfork,sendto,sendmsg"]


# --- throughput ------------------------------------------------------------------------


def wait_listen(nspath, port, deadline_s=10):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        r = subprocess.run(["nsenter", f"--net={nspath}", "ss", "-Hltn", f"sport = :{port}"],
                           capture_output=True, timeout=10)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise BenchError(f"iperf3 server in {nspath} not listening on {port}")


def iperf(client_ns, host, port, seconds):
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"]
    if client_ns:
        argv = ["nsenter", f"--net={client_ns}"] + argv
    r = run(argv, timeout=seconds + 30)
    data = json.loads(r.stdout)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


# --- the benchmark ----------------------------------------------------------------------


class Bench:
    def __init__(self, a):
        self.a = a
        self.quick = a.quick
        self.n = 5 if a.quick else 30
        self.warm = 1 if a.quick else 2
        self.n_scale = 20 if a.quick else 200
        self.tp_reps = 1 if a.quick else 12
        self.tp_secs = 1 if a.quick else 2
        self.r = {}
        self.state = a.state
        self.host_path = f"/run/netns/{a.hostns}"
        self.ip = IpPeer(a.tag)
        cni_dir = os.path.join(a.state, "cni")
        self.cni = CniPeer(a.tag, "pbbcnia", "cni-pbba", "10.241.0.0/24", cni_dir)
        self.cni_scale = CniPeer(a.tag, "pbbcnis", "cni-pbbs", "10.242.0.0/24", cni_dir)
        self.agent = None

    def new_agent(self, wrap=(), log_name="agent.stderr"):
        argv = list(wrap) + [self.a.agent, "--host-netns", self.host_path, "--state", self.state,
                             "--outer-ns-ino", str(self.a.outer_ino)]
        return Agent(argv, self.a.pidfile, os.path.join(self.a.tmp, log_name))

    def wait_links_gone(self, prefix, limit_s=20):
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            out = run(["ip", "-o", "link"]).stdout.decode()
            if not re.search(rf"^\d+: {re.escape(prefix)}", out, re.M):
                return
            time.sleep(0.05)
        log(f"warning: links {prefix}* still present after {limit_s}s")

    def interleaved(self, i, steps, into):
        """Run the (name, fn) steps in an order rotated by i; after the
        warm-up, append each one's seconds to into[name]."""
        for k in range(len(steps)):
            name, fn = steps[(i + k) % len(steps)]
            t = fn()
            if i >= self.warm:
                into[name].append(t)

    # 1-3: attach, attach with port, teardown
    def attach_and_teardown(self):
        ag, ip, cni = self.agent, self.ip, self.cni
        ag.cmd("net pbba 10.236.0.0/24")
        ip.setup_bridge()
        total = self.warm + self.n
        res = {k: [] for k in ("ours", "ip", "cni", "ours_p", "cni_p")}
        # 1. plain attach, the three tools interleaved, rotating order
        log(f"(1) attach, no ports: {total} containers per tool ({self.warm} warm-up)")
        for i in range(total):
            cni.make_ns(i)  # the runtime's job; not timed
            steps = [("ours", lambda: ag.seconds(f"attach pbba a{i:05d}")),
                     ("ip", lambda: ip.attach(i)),
                     ("cni", lambda: cni.add(i))]
            self.interleaved(i, steps, res)
        # 2. attach with NAT and one published port
        log(f"(2) attach with one published port: {total} containers per tool")
        for i in range(total):
            j = 100 + i
            cni.make_ns(j)
            steps = [("ours_p", lambda: ag.seconds(f"attach pbba p{i:05d} {20000 + i}:80")),
                     ("cni_p", lambda: cni.add(j, 30000 + i))]
            self.interleaved(i, steps, res)
        self.r["attach"] = res
        # 3. teardown
        log("(3) teardown")
        td = {k: [] for k in ("ours", "ip", "cni", "ours_p", "cni_p")}
        for i in range(total):
            steps = [("ours", lambda: ag.seconds(f"teardown a{i:05d}")),
                     ("ip", lambda: ip.teardown(i)),
                     ("cni", lambda: cni.delete(i))]
            self.interleaved(i, steps, td)
            cni.del_ns(i)
        for i in range(total):
            j = 100 + i
            steps = [("ours_p", lambda: ag.seconds(f"teardown p{i:05d}")),
                     ("cni_p", lambda: cni.delete(j, 30000 + i))]
            self.interleaved(i, steps, td)
            cni.del_ns(j)
        self.r["teardown"] = td
        for p in ("pv", "pbbi", "veth"):
            self.wait_links_gone(p)

    def step_medians(self, lines):
        """Send the agent each of its step-by-step commands (each answers
        with name=nanoseconds pairs); each step's median in seconds."""
        runs = []
        for line in lines:
            out = self.agent.cmd(line)
            runs.append({k: int(v) / 1e9 for k, v in (w.split("=") for w in out)})
        return {k: median([x[k] for x in runs]) for k in runs[0]}

    # where the time goes: the library's calls re-enacted one at a time, and the what-if
    def profiles(self):
        log("profiles: attach and teardown step by step; what-if with a long-lived nft context")
        ag = self.agent
        m = 3 if self.quick else 10
        # what-if first, on a quiet kernel: attach all, then tear all down
        wi = {"attach": [], "attach_p": [], "teardown_p": []}
        for i in range(m):
            wi["attach"].append(ag.seconds(f"whatif pbba w{i:05d}"))
            wi["attach_p"].append(ag.seconds(f"whatif pbba v{i:05d} {27000 + i}:80"))
        for i in range(m):
            ag.cmd(f"whatifdown w{i:05d}")
            wi["teardown_p"].append(ag.seconds(f"whatifdown v{i:05d}"))
        self.r["whatif"] = {k: median(v) for k, v in wi.items()}
        self.wait_links_gone("pv")
        self.r["profile"] = self.step_medians(f"profile pbba f{i:05d} {25000 + i}:80" for i in range(m))
        self.wait_links_gone("pv")
        for i in range(m):
            ag.cmd(f"attach pbba q{i:05d} {26000 + i}:80")
        self.r["tprofile"] = self.step_medians(f"tprofile q{i:05d}" for i in range(m))
        self.wait_links_gone("pv")

    # 6: throughput
    def throughput(self):
        log(f"(6) TCP throughput ({self.tp_reps} x {self.tp_secs}s per path)")
        ag, ip = self.agent, self.ip
        ag.cmd("net pbbt 10.238.0.0/24")
        o1 = ag.cmd("attach pbbt t0001")
        o2 = ag.cmd("attach pbbt t0002 15201:5201")
        o1_ns, o2_ip, o2_ns = o1[2], o2[1], o2[2]
        ip.attach(201)
        ip.attach(202)
        b1_ns, b2_ns, b2_ip = f"/run/netns/{ip.names(201)[0]}", f"/run/netns/{ip.names(202)[0]}", ip.names(202)[3]
        servers = []
        try:
            for ns in (o2_ns, b2_ns):
                p = subprocess.Popen(["timeout", "600", "nsenter", f"--net={ns}", "iperf3", "-s", "-p", "5201"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                with open(self.a.pidfile, "a") as f:
                    f.write(f"{p.pid}\n")
                servers.append(p)
                wait_listen(ns, 5201)
            paths = {
                "c2c": (lambda: iperf(o1_ns, o2_ip, 5201, self.tp_secs),
                        lambda: iperf(b1_ns, b2_ip, 5201, self.tp_secs)),
                "h2c": (lambda: iperf(None, "10.233.0.2", 15201, self.tp_secs),
                        lambda: iperf(None, b2_ip, 5201, self.tp_secs)),
                "h2c_lo": (lambda: iperf(None, "127.0.0.1", 15201, self.tp_secs),
                           lambda: iperf(None, b2_ip, 5201, self.tp_secs)),
                # A control: our container's own address, no published port
                # (what is left of h2c's gap is the port's DNAT).
                "h2c_direct": (lambda: iperf(None, o2_ip, 5201, self.tp_secs),
                               lambda: iperf(None, b2_ip, 5201, self.tp_secs)),
            }
            tp = {k: {"ours": [], "bare": []} for k in paths}
            for rep in range(self.tp_reps):
                for k, (ours, bare) in paths.items():
                    order = [("ours", ours), ("bare", bare)]
                    if rep % 2:
                        order.reverse()
                    for name, fn in order:
                        tp[k][name].append(fn())
            self.r["throughput"] = tp
        finally:
            for p in servers:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
        try:
            bnf = open("/proc/sys/net/bridge/bridge-nf-call-iptables").read().strip()
        except OSError:
            bnf = "n/a"
        self.r["bridge_nf_call_iptables"] = bnf
        ag.cmd("teardown t0001")
        ag.cmd("teardown t0002")
        ip.teardown(201)
        ip.teardown(202)

    # 5: scale
    def scale(self):
        n = self.n_scale
        k = min(10, max(1, n // 10))
        log(f"(5) scale: {n} containers with one published port each, all kept alive (ours, then CNI)")
        ag = self.agent
        # let the kernel finish destroying the namespaces of the previous phase first
        for p in ("pv", "pbbi"):
            self.wait_links_gone(p)
        time.sleep(1)
        ag.cmd("net pbbs 10.237.0.0/24")
        reps = 3 if self.quick else 5

        def prof(tag):
            return self.step_medians(f"profile pbbs {tag}{j:05d} {22000 + j}:80" for j in range(reps))

        prof_empty = prof("e")
        # Host ports below the ephemeral range (32768-60999): a port a
        # client socket of an earlier phase still holds is refused, rightly.
        ours = [ag.seconds(f"attach pbbs s{i:05d} {21000 + i}:80") for i in range(n)]
        prof_full = prof("g")
        self.r["scale_profile"] = {"empty": prof_empty, "full": prof_full, "reps": reps}
        tds = [ag.seconds(f"teardown s{i:05d}") for i in reversed(range(n))]
        self.r["scale_ours"] = {"times": ours, "k": k, "teardown_at_scale": tds[: k]}
        self.wait_links_gone("pv", 30)
        cni = self.cni_scale
        times = []
        deadline = time.monotonic() + (60 if self.quick else 120)
        made = []
        try:
            for i in range(n):
                if time.monotonic() > deadline:
                    log(f"CNI scale stopped at {i} containers (time limit)")
                    break
                cni.make_ns(i)
                made.append(i)
                times.append(cni.add(i, 50000 + i))
        finally:
            for i in made:
                subprocess.run(["ip", "netns", "del", cni.ns(i)], capture_output=True, timeout=30)
        self.r["scale_cni"] = {"times": times, "k": k}

    # 4: helper processes and link moves
    def counting(self):
        log("(4) helper processes and link moves (under strace, not timed)")
        K = 2 if self.quick else 5
        f_ours = os.path.join(self.a.tmp, "strace-ours.txt")
        ag = self.new_agent(wrap=STRACE + ["-o", f_ours], log_name="agent-strace.stderr")
        try:
            ag.cmd("net pbbx 10.239.0.0/24")
            for i in range(K):
                ag.cmd(f"attach pbbx x{i:05d} {23000 + i}:80")
            for i in range(K):
                ag.cmd(f"teardown x{i:05d}")
        finally:
            ag.close()
        c = strace_counts(f_ours)
        ours = {"procs_per_ctr": (c["execve"] - 1 + c["procs"]) / K, "threads_per_ctr": (c["threads"] - 1) / K,
                "moves_per_ctr": c["link_moves"] / K, "K": K, "programs": c["programs"]}
        # ip sequence for one container
        f_ip = os.path.join(self.a.tmp, "strace-ip.txt")
        script = " && ".join(" ".join(cmd) for cmd in self.ip.attach_cmds(230))
        run(STRACE + ["-o", f_ip, "sh", "-c", script])
        self.ip.teardown(230)
        c = strace_counts(f_ip)
        ipc = {"procs_per_ctr": c["execve"] - 1, "moves_per_ctr": c["link_moves"], "programs": c["programs"][1:]}
        # CNI bridge + portmap for one container
        cni = self.cni
        cni.make_ns(300)
        f_c1 = os.path.join(self.a.tmp, "strace-cni-bridge.txt")
        f_c2 = os.path.join(self.a.tmp, "strace-cni-portmap.txt")
        out = cni.plugin("bridge", "ADD", 300, cni.bridge_conf(), wrap=STRACE + ["-o", f_c1])
        cni.prev[300] = json.loads(out)
        cni.plugin("portmap", "ADD", 300, cni.portmap_conf(300, 31999), wrap=STRACE + ["-o", f_c2])
        cni.delete(300, 31999)
        cni.del_ns(300)
        c1, c2 = strace_counts(f_c1), strace_counts(f_c2)
        cnic = {"procs_per_ctr": c1["execve"] + c2["execve"], "moves_per_ctr": c1["link_moves"] + c2["link_moves"],
                "programs": c1["programs"] + c2["programs"]}
        self.r["counts"] = {"ours": ours, "ip": ipc, "cni": cnic}

    def go(self):
        t0 = time.monotonic()
        self.agent = self.new_agent()
        try:
            self.attach_and_teardown()
            self.profiles()
            self.throughput()
            self.scale()
        finally:
            self.agent.close()
        self.counting()
        self.r["elapsed"] = time.monotonic() - t0
        self.report()

    # --- output ---------------------------------------------------------------------

    def report(self):
        r = self.r
        ms = lambda s: f"{s * 1e3:.2f} ms"
        rows = []

        def row(what, ours, peer, peer_name, ratio, goal, ok):
            res = "" if ok is None else verdict(ok)
            rows.append((what, ours, peer, peer_name, ratio, goal, res))

        def ratio(a, b):
            return a / b if b else float("nan")

        at, td = r["attach"], r["teardown"]
        o, i_, c = median(at["ours"]), median(at["ip"]), median(at["cni"])
        row("1 attach, no ports", ms(o), ms(i_), "ip sequence (9 cmds)", f"{ratio(o, i_):.3f}x", "<= 0.15x",
            ratio(o, i_) <= 0.15)
        row("", "", ms(c), "CNI bridge+host-local", f"{ratio(o, c):.3f}x", "(info)", None)
        row("  stretch", ms(o), "", "", "", "<= 3 ms", o <= 0.003)
        op, cp = median(at["ours_p"]), median(at["cni_p"])
        row("2 attach, NAT + 1 port", ms(op), ms(cp), "CNI bridge -> portmap", f"{ratio(op, cp):.3f}x", "<= 0.2x",
            ratio(op, cp) <= 0.2)
        tp_, tc = median(td["ours_p"]), median(td["cni_p"])
        row("3 teardown, 1 port", ms(tp_), ms(tc), "CNI DEL portmap+bridge", f"{ratio(tp_, tc):.3f}x",
            "<= 1 ms, <= 0.05x", tp_ <= 0.001 and ratio(tp_, tc) <= 0.05)
        t0, ti, tcn = median(td["ours"]), median(td["ip"]), median(td["cni"])
        row("  teardown, no ports", ms(t0), ms(ti), "ip link del + netns del", f"{ratio(t0, ti):.3f}x", "(info)",
            None)
        row("", "", ms(tcn), "CNI DEL bridge", f"{ratio(t0, tcn):.3f}x", "(info)", None)
        cn = r["counts"]
        row("4 helper processes/ctr", f"{cn['ours']['procs_per_ctr']:g}", f"{cn['ip']['procs_per_ctr']:g}",
            "ip sequence", "", "0", cn["ours"]["procs_per_ctr"] == 0)
        row("", "", f"{cn['cni']['procs_per_ctr']:g}", "CNI bridge+portmap", "", "(info)", None)
        row("  link moves/ctr", f"{cn['ours']['moves_per_ctr']:g}", f"{cn['ip']['moves_per_ctr']:g}",
            "ip sequence", "", "0", cn["ours"]["moves_per_ctr"] == 0)
        row("", "", f"{cn['cni']['moves_per_ctr']:g}", "CNI bridge", "", "(info)", None)
        so, sc = r["scale_ours"], r["scale_cni"]
        k, n = so["k"], len(so["times"])
        f_o, l_o = median(so["times"][:k]), median(so["times"][-k:])
        row(f"5 attach #1 vs #{n} (1 port)", f"{ms(f_o)} -> {ms(l_o)}", "", f"medians of first/last {k}",
            f"{ratio(l_o, f_o):.2f}x", "<= 1.2x", ratio(l_o, f_o) <= 1.2)
        if len(sc["times"]) >= 2 * sc["k"]:
            kc, nc = sc["k"], len(sc["times"])
            f_c, l_c = median(sc["times"][:kc]), median(sc["times"][-kc:])
            row("", "", f"{ms(f_c)} -> {ms(l_c)}", f"CNI bridge+portmap, #1 vs #{nc}", f"{ratio(l_c, f_c):.2f}x",
                "(info)", None)
            row(f"  attach #{n} vs CNI #{nc}", ms(l_o), ms(l_c), "CNI bridge+portmap", f"{ratio(l_o, l_c):.3f}x",
                "(info)", None)
        tpr = r["throughput"]
        labels = {"c2c": "6 TCP container->container", "h2c": "  TCP host->container",
                  "h2c_lo": "  TCP host 127.0.0.1->ctr", "h2c_direct": "  TCP host->ctr IP, no port"}
        peers = {"c2c": "bare veth+bridge (ip)", "h2c": "bare, direct to ctr IP", "h2c_lo": "bare, direct to ctr IP",
                 "h2c_direct": "bare, direct to ctr IP"}
        info = ("h2c_lo", "h2c_direct")
        for key in ("c2c", "h2c", "h2c_lo", "h2c_direct"):
            ob, bb = median(tpr[key]["ours"]), median(tpr[key]["bare"])
            # ratio: median of the per-repetition ratios (ours and bare run back to back)
            rr = median([o_ / b_ for o_, b_ in zip(tpr[key]["ours"], tpr[key]["bare"])])
            goal = ">= 0.95x" if key not in info else "(info)"
            row(labels[key], f"{ob:.1f} Gbit/s", f"{bb:.1f} Gbit/s", peers[key], f"{rr:.3f}x", goal,
                rr >= 0.95 if key not in info else None)

        hdr = ("measurement", "ours", "peer", "peer is", "ratio", "goal", "result")
        mode = "BENCH_QUICK (smoke)" if self.quick else "full"
        print(f"pelagos-net bridge benchmark ({mode}; medians of {self.n} containers per tool after "
              f"{self.warm} warm-up; {os.cpu_count()} CPUs; kernel {os.uname().release})")
        for line in table(hdr, rows, left=range(len(hdr))):
            print(line)
        misses = sum(1 for x in rows if x[6] == "MISS")
        print(f"{sum(1 for x in rows if x[6] == 'PASS')} PASS, {misses} MISS")
        print()
        print("details (p90 / min):")
        for name, d in (("attach", at), ("teardown", td)):
            for k in ("ours", "ip", "cni", "ours_p", "cni_p"):
                xs = d[k]
                print(f"  {name:8} {k:6}  median {ms(median(xs)):>10}  p90 {ms(p90(xs)):>10}  min {ms(min(xs)):>10}"
                      f"  n={len(xs)}")
        def trend(xs):
            step = max(1, len(xs) // 10)
            return " ".join(f"{median(xs[i:i + step]) * 1e3:.1f}" for i in range(0, len(xs), step))

        print(f"  scale ours: #1 {ms(so['times'][0])}, #{n} {ms(so['times'][-1])}; medians per {max(1, n // 10)} "
              f"attaches (ms): {trend(so['times'])}; teardown with {n} live "
              f"(median of {len(so['teardown_at_scale'])}) {ms(median(so['teardown_at_scale']))}")
        if sc["times"]:
            print(f"  scale CNI:  #1 {ms(sc['times'][0])}, #{len(sc['times'])} {ms(sc['times'][-1])}; "
                  f"medians per {max(1, len(sc['times']) // 10)} (ms): {trend(sc['times'])}")
        sp = r["scale_profile"]
        grow = sorted(((sp["full"][k] - sp["empty"][k], k) for k in sp["empty"]), reverse=True)
        print(f"  attach step by step with 0 vs {n} live containers (ms, medians of {sp['reps']}; largest changes): "
              + ", ".join(f"{k} {sp['empty'][k] * 1e3:.2f} -> {sp['full'][k] * 1e3:.2f}" for _, k in grow[:6]))
        for key, what in (("profile", "attach"), ("tprofile", "teardown")):
            pr = r[key]
            print(f"  one {what} with a port, step by step in ms (the library's calls re-enacted one at a time; "
                  f"medians; total {ms(pr['total'])}):")
            line = "    "
            for k in (k for k in pr if k != "total"):
                item = f"{k} {pr[k] * 1e3:.3f}  "
                if len(line) + len(item) > 110:
                    print(line.rstrip())
                    line = "    "
                line += item
            print(line.rstrip())
        wi = r["whatif"]
        print(f"  what-if (NOT the library's flow: the same calls with one nft context kept open for the whole "
              f"process instead of one per attach/teardown): attach {ms(wi['attach'])}, attach with a port "
              f"{ms(wi['attach_p'])}, teardown with a port {ms(wi['teardown_p'])}")

        def progs(ps):
            from collections import Counter
            return ", ".join(f"{n}x {p}" for p, n in Counter(ps).items()) or "none"
        print(f"  programs run per container: ours {progs(cn['ours']['programs'][1:])} "
              f"({cn['ours']['threads_per_ctr']:g} short-lived threads per attach+teardown); "
              f"ip sequence: {progs(cn['ip']['programs'])}; CNI bridge+portmap ADD: {progs(cn['cni']['programs'])}")
        print(f"  bridge-nf-call-iptables in the host netns: {r['bridge_nf_call_iptables']}; "
              f"throughput samples (Gbit/s, ratio = median of per-repetition ratios): "
              + "; ".join(f"{k} ours {[round(x, 1) for x in v['ours']]} bare {[round(x, 1) for x in v['bare']]}"
                          for k, v in r["throughput"].items()))
        print(f"  measuring took {r['elapsed']:.0f} s")
        if self.a.json:
            with open(self.a.json, "w") as f:
                json.dump(r, f, indent=1, default=str)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hostns", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--outer-ino", type=int, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    enter_netns(f"/run/netns/{a.hostns}", a.outer_ino)
    try:
        Bench(a).go()
    except (BenchError, subprocess.TimeoutExpired, OSError, json.JSONDecodeError, KeyError) as e:
        print(f"bench/bridge: broken: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

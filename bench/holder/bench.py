#!/usr/bin/python3
"""Rootless shared networks benchmark: the user's network holder against its peers.

Run by bench/holder/run inside a throwaway "host" network namespace, as root;
every rootless command runs as the benchmark user (setpriv), the root bridge
peer as root, each with state directories of its own under --tmp.

Sections (ours, the peer, measured interleaved in the same run):
  1. holder bring-up (first run on a network: user namespace with subordinate
     ids, network and mount namespaces, pasta configured), as the run logs it;
     peer: bare pasta making a user and network namespace and configuring it
     (`pasta --config-net -- true`, wall time). Goal <= 70 ms.
  2. attach on a warm holder (bridge, veth into the run's namespace, address,
     route: the attach_in_holder step, as the run logs it); peer: a whole
     root bridge `run -- true` and a rootless holder `run -- true`, wall time.
     Goal <= 5 ms.
  3. container -> container TCP throughput (iperf3, 3 s) on a rootless
     network vs on a root bridge network. Goal >= 0.9x.
  4. published-port TCP throughput from the host's loopback into a container
     on a rootless network vs the builtin driver into a single run's
     namespace (`--network pasta --port-driver builtin`). Goal >= 0.9x.
"""

import argparse
import json
import os
import pwd
import re
import signal
import statistics
import subprocess
import sys
import time

ARGS = None
PIDS = []


class BenchError(Exception):
    pass


def log(msg):
    print(f"bench/holder: {msg}", file=sys.stderr, flush=True)


def record_pid(pid):
    PIDS.append(pid)
    with open(ARGS.pidfile, "a") as f:
        f.write(f"{pid}\n")


def user_cmd(args):
    u = pwd.getpwnam(ARGS.user)
    d = os.path.join(ARGS.tmp, "user")
    return ["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}", "--clear-groups", "--",
            ARGS.bin, "--run-dir", f"{d}/run", "--config-dir", f"{d}/config", "--netns-dir", f"{d}/netns"] + args


def root_cmd(args):
    d = os.path.join(ARGS.tmp, "root")
    return [ARGS.bin, "--run-dir", f"{d}/run", "--config-dir", f"{d}/config", "--netns-dir", f"{d}/netns"] + args


ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


def run(argv, timeout=60):
    r = subprocess.run(argv, capture_output=True, timeout=timeout, env=ENV)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return r


def timed(argv):
    t = time.perf_counter()
    r = run(argv)
    return time.perf_counter() - t, r


def logged_ms(stderr, pattern):
    m = re.search(pattern + r" in ([0-9.]+) ms", stderr.decode(errors="replace"))
    if not m:
        raise BenchError(f"no '{pattern}' in the run's log: {stderr.decode(errors='replace')[-500:]}")
    return float(m.group(1))


def holder_running():
    return os.path.exists(os.path.join(ARGS.tmp, "user/run/holder/state.json"))


def wait_holder_stopped():
    deadline = time.time() + 10
    while holder_running():
        if time.time() > deadline:
            raise BenchError("the holder did not stop after its last run")
        time.sleep(0.01)


class Server:
    """A run in the background whose command prints a line once it serves."""

    def __init__(self, argv, ready):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        record_pid(self.p.pid)
        deadline = time.time() + 20
        for line in self.p.stdout:
            if ready in line.decode(errors="replace"):
                return
            if time.time() > deadline:
                break
        self.stop()
        raise BenchError(f"server did not start: {' '.join(argv)}: {self.p.stderr.read().decode(errors='replace')}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def med(xs):
    return statistics.median(xs) if xs else float("nan")


RESULTS = []


def report(name, ours, peer, unit, goal, higher_better, peer_name):
    ratio = ours / peer if peer else float("nan")
    if goal[0] == "abs":
        ok = ours <= goal[1]
        goal_text = f"<= {goal[1]} {unit}"
    else:
        ok = ratio >= goal[1] if higher_better else ratio <= goal[1]
        goal_text = f"{'>=' if higher_better else '<='} {goal[1]}x"
    RESULTS.append({"name": name, "ours": ours, "peer": peer, "peer_name": peer_name, "unit": unit,
                    "ratio": ratio, "goal": goal_text, "pass": ok})
    print(f"{name:<44} ours {ours:9.2f} {unit:<7} {peer_name} {peer:9.2f} {unit:<7} "
          f"ratio {ratio:5.2f}  goal {goal_text:<10} {'PASS' if ok else 'MISS'}", flush=True)


def bringup(n):
    ours, peer = [], []
    pasta = ["setpriv", f"--reuid={pwd.getpwnam(ARGS.user).pw_uid}", f"--regid={pwd.getpwnam(ARGS.user).pw_gid}",
             "--clear-groups", "--", "pasta", "--config-net", "-q", "-t", "none", "-u", "none", "-T", "none",
             "-U", "none", "--", "true"]
    for _ in range(n):
        wait_holder_stopped()
        _, r = timed(user_cmd(["-v", "run", "--network", "hb", "--", "true"]))
        ours.append(logged_ms(r.stderr, r"started the network holder \(pid \d+\)"))
        t, _ = timed(pasta)
        peer.append(t * 1e3)
    report("holder bring-up (ms)", med(ours), med(peer), "ms", ("abs", 70), False, "bare pasta netns")
    return ours, peer


def attach(n):
    keeper = Server(user_cmd(["run", "--network", "hb", "--", "sh", "-c", "echo up; exec sleep 600"]), "up")
    ours, run_holder, run_root = [], [], []
    try:
        for _ in range(n):
            t, r = timed(user_cmd(["-v", "run", "--network", "hb", "--", "true"]))
            ours.append(logged_ms(r.stderr, r"attached to hb in the network holder"))
            run_holder.append(t * 1e3)
            t, _ = timed(root_cmd(["run", "--network", "bridge:rb", "--", "true"]))
            run_root.append(t * 1e3)
    finally:
        keeper.stop()
    report("attach on a warm holder (ms)", med(ours), med(run_root), "ms", ("abs", 5), False, "root run ")
    report("run -- true on a warm holder (ms)", med(run_holder), med(run_root), "ms", ("ratio", 1.5), False,
           "root run ")


IPERF_SERVER = ["iperf3", "-s", "--forceflush", "-p", "5201"]


def iperf_bps(out):
    j = json.loads(out)
    return j["end"]["sum_received"]["bits_per_second"] / 1e9


def c2c_round(cmd, network, ip, secs):
    srv = Server(cmd(["run", "--network", network, "--ip", ip, "--"] + IPERF_SERVER), "listening")
    try:
        r = run(cmd(["run", "--network", network, "--", "iperf3", "-c", ip, "-p", "5201", "-t", str(secs), "-J"]),
                timeout=secs + 30)
        return iperf_bps(r.stdout)
    finally:
        srv.stop()


def c2c(rounds, secs):
    ours, peer = [], []
    for _ in range(rounds):
        ours.append(c2c_round(user_cmd, "hb", "10.90.1.200", secs))
        peer.append(c2c_round(root_cmd, "rb", "10.90.1.200", secs))
    report("container->container TCP (Gbit/s)", med(ours), med(peer), "Gbit/s", ("ratio", 0.9), True, "root bridge")


def published_round(network, port, secs, extra):
    srv = Server(user_cmd(["run", "--network", network] + extra + ["-p", f"127.0.0.1:{port}:5201", "--"]
                          + IPERF_SERVER), "listening")
    try:
        r = run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"], timeout=secs + 30)
        return iperf_bps(r.stdout)
    finally:
        srv.stop()


def published(rounds, secs):
    ours, peer = [], []
    for i in range(rounds):
        ours.append(published_round("hb", 47301 + i, secs, []))
        peer.append(published_round("pasta", 47401 + i, secs, ["--port-driver", "builtin"]))
    report("published port, host loopback (Gbit/s)", med(ours), med(peer), "Gbit/s", ("ratio", 0.9), True,
           "builtin pasta")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    for a in ("--bin", "--tmp", "--user", "--pidfile", "--json"):
        ap.add_argument(a)
    ap.add_argument("--quick", action="store_true")
    ARGS = ap.parse_args()
    n, rounds, secs = (3, 1, 1) if ARGS.quick else (15, 3, 3)
    run(user_cmd(["network", "create", "--subnet", "10.90.1.0/24", "hb"]))
    run(root_cmd(["network", "create", "--subnet", "10.90.1.0/24", "rb"]))
    try:
        bringup(n)
        attach(n * 2)
        c2c(rounds, secs)
        published(rounds, secs)
    finally:
        for p in PIDS:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_holder_stopped()
    run(user_cmd(["network", "rm", "hb"]))
    run(root_cmd(["network", "rm", "rb"]))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(RESULTS, f, indent=2)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)

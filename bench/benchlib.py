"""Helpers shared by the benchmarks (python3 stdlib only): bench/bench.py,
bench/portfwd/bench.py and bench/bridge/bench.py.

Each run script copies this file next to the bench.py it runs, so a plain
`import benchlib` finds it (the script's own directory is first on
sys.path).

What is here: the benchmark's own error, statistics, the report table,
processes (the pid tracker, reaping, the child subreaper, the cleanup of an
exit trap), commands spawned as the unprivileged user, sockets of this or
another network namespace (setns(2)) with the loopback latency loops, and
the measure-then-report frame of a main().
"""

import argparse
import ctypes
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNET = 0x40000000
LOOPBACK = "127.0.0.1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

libc = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    """The benchmark itself broke (not a missed goal)."""


# --------------------------------------------------------------------------
# statistics and the report


def median(xs):
    return statistics.median(xs)


def pct(xs, p):
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def verdict(ok):
    return "PASS" if ok else "MISS"


def table(head, rows, left):
    """The lines of a table: the head, a rule of dashes, the rows. Columns
    are two spaces apart, as wide as their widest cell; those whose index
    is in `left` are flush left, the others flush right."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join("{:<%d}" % w if i in left else "{:>%d}" % w for i, w in enumerate(widths))
    return [line.format(*head), line.format(*("-" * w for w in widths))] + [line.format(*r) for r in rows]


def pinned():
    """Whether the measurements are pinned to CPUs (BENCH_PIN, default on
    when there are at least two)."""
    return os.environ.get("BENCH_PIN", "1") != "0" and (os.cpu_count() or 1) >= 2


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------
# processes


def proc_stat(pid):
    """(ppid, starttime, comm) of pid, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    lpar, rpar = data.find("("), data.rfind(")")
    comm = data[lpar + 1 : rpar]
    rest = data[rpar + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    return int(rest[1]), int(rest[19]), comm


def all_procs():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                out[int(name)] = st
    return out


def descendants(root, procs=None):
    """Every live descendant of root, parents before children."""
    procs = procs if procs is not None else all_procs()
    kids = {}
    for pid, (ppid, _, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Tracker:
    """Remembers (pid, starttime) of everything started, in memory and in a file."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.pids = {}

    def add(self, pid):
        st = proc_stat(pid)
        if st and pid not in self.pids:
            self.pids[pid] = st[1]
            with open(self.pidfile, "a") as f:
                f.write(f"{pid} {st[1]}\n")

    def kill_all(self):
        """SIGKILL everything tracked that still runs, and its descendants."""
        return kill_recorded(self.pids)


def kill_recorded(recorded):
    """SIGKILL every pid of {pid: starttime} that is still that process, its
    descendants and this process's own descendants."""
    procs = all_procs()
    victims = []
    for pid, start in recorded.items():
        st = procs.get(pid)
        if st and st[1] == start:
            victims.extend(descendants(pid, procs))
            victims.append(pid)
    me = os.getpid()
    victims.extend(descendants(me, procs))
    for pid in dict.fromkeys(victims):
        if pid != me:
            kill(pid, signal.SIGKILL)
    return victims


def wait_exit(proc, timeout):
    """Block until proc exits (pidfd + poll, so the wake-up is immediate),
    at most timeout seconds; then reap it. Returns the exit code.
    Raises BenchError (after SIGKILL) on timeout."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return proc.wait()
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        if not p.poll(timeout * 1000):
            proc.kill()
            proc.wait()
            raise BenchError(f"{proc.args[0]} (pid {proc.pid}) did not exit within {timeout} s")
    finally:
        os.close(fd)
    return proc.wait()


def reap_all(timeout=3.0):
    """Reap every child (orphans re-parented to us included) until none is
    left; SIGKILL what is still there after timeout. Call only when no
    Popen of ours is still running."""
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            if killed:
                raise BenchError(f"children left after SIGKILL: {descendants(os.getpid())}")
            for d in descendants(os.getpid()):
                kill(d, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + 2.0
        time.sleep(0.001)


def become_subreaper():
    """SIGTERM and SIGHUP interrupt the measuring (KeyboardInterrupt), and
    whatever the measured commands leave behind is re-parented to this
    process, to be reaped or killed here."""

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError("prctl(PR_SET_CHILD_SUBREAPER) failed")


def cleanup_mode(a):
    """For a run script's exit trap (`bench.py --cleanup --pidfile F --netns
    N ...`): kill what the pid file lists (and its descendants) and every
    process left in the given namespaces."""
    recorded = {}
    try:
        with open(a.pidfile) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    recorded[int(parts[0])] = int(parts[1])
    except OSError:
        pass
    victims = set(kill_recorded(recorded)) - {os.getpid()}
    for ns in a.netns:
        try:
            ino = os.stat(f"/run/netns/{ns}").st_ino
        except OSError:
            continue
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid():
                try:
                    if os.stat(f"/proc/{name}/ns/net").st_ino == ino:
                        victims.add(int(name))
                        kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(proc_stat(p) for p in victims):
        time.sleep(0.02)
    return 0


def check_clean(a):
    """Nothing of ours may outlive the measurements: no child process, no
    run record, no named netns left by pelagos-net (in a.run_dir and
    a.netns_dir)."""
    left = []
    reap_all()
    kids = descendants(os.getpid())
    if kids:
        left.append(f"processes {kids}")
    for d in (os.path.join(a.run_dir, "runs"), a.netns_dir):
        try:
            names = os.listdir(d)
        except (FileNotFoundError, TypeError):
            continue
        if names:
            left.append(f"{d}: {names}")
    return left


# --------------------------------------------------------------------------
# commands as the unprivileged user


class UserEnv:
    """Spawns commands as the unprivileged user: uid/gid set and the
    supplementary groups cleared in the fork (what `setpriv --reuid=U
    --regid=G --clear-groups` does, without a wrapper's start-up), a clean
    environment, the work directory as cwd, stderr into one log."""

    def __init__(self, a):
        self.a = a
        self.uid, self.gid = a.uid, a.gid
        self.workdir = a.workdir
        self.tracker = Tracker(a.pidfile)
        self.log = open(os.path.join(a.workdir, "stderr.log"), "ab")
        self.env = {
            "PATH": PATH,
            "HOME": "/tmp",
            "USER": a.user,
            "LOGNAME": a.user,
            "LANG": "C.UTF-8",
        }

    def spawn(self, argv, stdout=subprocess.DEVNULL):
        return subprocess.Popen(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=self.env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=self.log,
            close_fds=True,
        )

    def log_tail(self, n=2000):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------
# sockets, here or in another network namespace


def setns(fd, what="setns"):
    """Move this thread into the network namespace of fd."""
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise BenchError(f"{what}: {os.strerror(ctypes.get_errno())}")


class Local:
    """TCP sockets of this thread's own network namespace."""

    def socket(self):
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def connect(self, addr, timeout=5.0):
        """A connected socket with TCP_NODELAY and the given timeout."""
        s = self.socket()
        s.settimeout(timeout)
        try:
            s.connect(addr)
        except OSError:
            s.close()
            raise
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


# The three latency loops against a server whose first byte b"E" asks for an
# echo: `ns` makes the sockets (a Local or anything with its two methods),
# `where` names the server in an error. Microseconds per sample.


def rtt(ns, addr, n, timeout=5.0, where=None):
    """n 1-byte round trips over one connection, after 50 for warm-up."""
    out = []
    with ns.connect(addr, timeout) as s:
        s.sendall(b"E")
        for _ in range(50):  # warm-up
            s.send(b"x")
            s.recv(1)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            s.send(b"x")
            if s.recv(1) != b"x":
                raise BenchError(f"echo on {where or addr} broke")
            out.append(time.perf_counter_ns() - t0)
    return [x / 1e3 for x in out]


def conn_close(ns, addr, n):
    """n times: connect, close."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        s = ns.socket()
        s.connect(addr)
        s.close()
        out.append(time.perf_counter_ns() - t0)
    return [x / 1e3 for x in out]


def conn_echo_close(ns, addr, n, where=None):
    """n times: connect, one byte echoed, close."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        s = ns.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5.0)
        s.connect(addr)
        s.sendall(b"Ex")
        if s.recv(1) != b"x":
            raise BenchError(f"echo on {where or addr} broke")
        s.close()
        out.append(time.perf_counter_ns() - t0)
    return [x / 1e3 for x in out]


# --------------------------------------------------------------------------
# main


def arg_parser(pidfile_required=True):
    """The options bench/run and bench/portfwd/run pass: the exit trap's
    cleanup, where things are, the user, the report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cleanup", action="store_true")
    ap.add_argument("--netns", action="append", default=[])
    ap.add_argument("--pidfile", required=pidfile_required)
    ap.add_argument("--bin")
    ap.add_argument("--user", default="pnettest")
    ap.add_argument("--uid", type=int)
    ap.add_argument("--gid", type=int)
    ap.add_argument("--workdir")
    ap.add_argument("--run-dir")
    ap.add_argument("--netns-dir")
    ap.add_argument("--json")
    ap.add_argument("--label", default="")
    ap.add_argument("--quick", action="store_true")
    return ap


def measure_and_report(a, env, meta, measure, render):
    """Run measure() (which returns the results), check that nothing was left
    behind, print render(results, meta + elapsed time and load) and write
    the results as JSON to a.json. The exit status: 0, or 2 when the
    benchmark broke or was interrupted (then what it started is killed)."""
    t_start = time.monotonic()
    load0 = loadavg()
    try:
        res = measure()
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        print(f"bench: last lines of the commands' stderr:\n{env.log_tail(1500)}", file=sys.stderr)
        env.tracker.kill_all()
        reap_all()
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        env.tracker.kill_all()
        reap_all()
        return 2
    leftovers = check_clean(a)
    if leftovers:
        print(f"bench: error: left behind: {leftovers}", file=sys.stderr)
        return 2
    res["elapsed_s"] = time.monotonic() - t_start
    res["loadavg"] = [load0, loadavg()]
    meta += (
        f"\nmeasured in {res['elapsed_s']:.0f} s; load average before {load0}, after {loadavg()} "
        f"(other work on the machine shows up as noise)"
    )
    print(render(res, meta))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return 0

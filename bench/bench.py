#!/usr/bin/python3
"""Timing logic of the pelagos-net benchmark (python3 stdlib only).

Started by bench/run as root *inside* the throwaway host network namespace
(`ip netns exec pnb-hPID /usr/bin/python3 bench.py ...`). Every measured
command is spawned from here with the unprivileged user's uid/gid and no
supplementary groups (what `setpriv --reuid=U --regid=G --clear-groups`
does, done in the fork instead of through an extra exec, so that no wrapper
start-up is added to the numbers). Clients (the echo probe, the throughput,
round-trip and connect loops) run in this process, as root, in the host
namespace, and only ever connect to 127.0.0.1.

This process makes itself a child subreaper, so everything the measured
commands leave behind (pasta after pelagos-net exits, the command of a
killed bare pasta) is re-parented here and is reaped or killed between
iterations. Every pid it starts is also appended to a pid file, which
bench/run's exit trap hands back to `bench.py --cleanup` if this process
itself dies.

Exit status: 0 when every measurement ran (a MISS is not a failure),
2 when the benchmark itself broke.
"""

import gc
import os
import signal
import socket
import subprocess
import sys
import time

from benchlib import (
    LOOPBACK,
    BenchError,
    Local,
    UserEnv,
    arg_parser,
    become_subreaper,
    cleanup_mode,
    conn_close as _conn_close,
    conn_echo_close as _conn_echo_close,
    descendants,
    kill,
    measure_and_report,
    median,
    pct,
    pinned,
    proc_stat,
    reap_all,
    rtt as _rtt,
    table,
    verdict,
    wait_exit,
)

NS_PORT = 7000  # the port the servers listen on inside the namespaces
PASTA_NOFWD = ["-u", "none", "-T", "none", "-U", "none"]
LOCAL = Local()


# --------------------------------------------------------------------------
# processes


def sig_blocked(pid):
    """SigBlk of pid as an int, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return int(line.split()[1], 16)
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------
# the environment


class Env(UserEnv):
    def __init__(self, a):
        super().__init__(a)
        self.bin = a.bin
        self.run_dir, self.netns_dir = a.run_dir, a.netns_dir
        self.pasta = a.pasta
        self.server = os.path.join(a.workdir, "nsserver.py")
        self.python = "/usr/bin/python3"
        self.next_port = 21000

    def port(self):
        """A host port never used before in this run (no TIME_WAIT leftovers)."""
        self.next_port += 1
        if self.next_port > 60000:
            raise BenchError("ran out of ports")
        return self.next_port

    # command lines ----------------------------------------------------------

    def ours(self, *args):
        return [self.bin, "--run-dir", self.run_dir, "--netns-dir", self.netns_dir, "run", *args]

    def ours_fwd(self, port, cmd):
        # The peer is bare pasta, so ours runs pasta and its forwarding too
        # (auto would pick slirp4netns over Debian's pasta build for egress,
        # and the builtin port driver on it; bench/portfwd compares those).
        return self.ours("--network", "pasta", "--port-driver", "pasta", "-p", f"{LOOPBACK}:{port}:{NS_PORT}", "--", *cmd)

    def pasta_fwd(self, port, cmd):
        return [self.pasta, "--config-net", "-t", f"{LOOPBACK}/{port}:{NS_PORT}", *PASTA_NOFWD, "--", *cmd]


def stop_ours(env, proc, timeout=5.0):
    """SIGTERM pelagos-net (it forwards to the command and tears down)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        wait_exit(proc, timeout)
    finally:
        reap_all()


def stop_pasta(env, proc, timeout=5.0):
    """Bare pasta does not take its command down with it: SIGTERM the
    command (and anything under it) first, then pasta."""
    for pid in descendants(proc.pid):
        env.tracker.add(pid)
        kill(pid, signal.SIGTERM)
    stop_ours(env, proc, timeout)


# --------------------------------------------------------------------------
# 1. start-up


def timed_run(env, argv):
    t0 = time.perf_counter()
    p = env.spawn(argv)
    rc = wait_exit(p, 10)
    t1 = time.perf_counter()
    if rc != 0:
        raise BenchError(f"{' '.join(argv)} exited {rc}\n{env.log_tail()}")
    return (t1 - t0) * 1e3


def bench_startup(env, n):
    cases = {
        "ours": env.ours("--network", "loopback", "--", "true"),
        "peer": ["unshare", "--user", "--map-root-user", "--net", "true"],
        # The same isolation as a run (PID and mount namespaces, a /proc of
        # its own) without any of our work: what G3's peer lacks.
        "isolated": ["unshare", "--user", "--map-root-user", "--net", "--pid", "--mount", "--fork", "--mount-proc", "true"],
        "floor": ["true"],
    }
    samples = {k: [] for k in cases}
    for k, argv in cases.items():  # warm-up (page cache, binaries)
        for _ in range(5):
            timed_run(env, argv)
    order = list(cases)
    for i in range(n):
        for k in order if i % 2 == 0 else reversed(order):
            samples[k].append(timed_run(env, cases[k]))
    reap_all()
    return {k: {"p50": median(v), "p90": pct(v, 90), "min": min(v), "n": len(v)} for k, v in samples.items()}


# --------------------------------------------------------------------------
# 2. launch -> first echo through the forward


ECHO_SERVER = ["socat", f"TCP-LISTEN:{NS_PORT},reuseaddr,fork", "PIPE"]


def try_echo(port, timeout=0.2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((LOOPBACK, port))
        s.sendall(b"x")
        return s.recv(1) == b"x"
    except OSError:
        return False
    finally:
        s.close()


def first_echo(env, argv, port, limit=10.0):
    t0 = time.perf_counter()
    p = env.spawn(argv)
    tries = 0
    while True:
        tries += 1
        if try_echo(port):
            t1 = time.perf_counter()
            break
        if p.poll() is not None:
            reap_all()
            raise BenchError(f"{' '.join(argv)} exited {p.returncode} before echoing\n{env.log_tail()}")
        if time.perf_counter() - t0 > limit:
            t1 = None
            break
        time.sleep(0.001)
    for pid in [p.pid] + descendants(p.pid):
        env.tracker.add(pid)
    return p, t1, t0, tries


def bench_launch(env, n):
    samples = {"ours": [], "peer": []}
    stop_ms = {"ours": [], "peer": []}
    tries = {"ours": [], "peer": []}
    for i in range(n):
        for k in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
            port = env.port()
            argv = env.ours_fwd(port, ECHO_SERVER) if k == "ours" else env.pasta_fwd(port, ECHO_SERVER)
            p, t1, t0, ntries = first_echo(env, argv, port)
            s0 = time.perf_counter()
            (stop_ours if k == "ours" else stop_pasta)(env, p)
            stop_ms[k].append((time.perf_counter() - s0) * 1e3)
            if t1 is None:
                raise BenchError(f"no echo through 127.0.0.1:{port} within 10 s ({k})\n{env.log_tail()}")
            if i > 0 or n == 1:  # the first pair is a warm-up
                samples[k].append((t1 - t0) * 1e3)
                tries[k].append(ntries)
    res = {
        k: {
            "p50": median(samples[k]),
            "p90": pct(samples[k], 90),
            "min": min(samples[k]),
            "n": len(samples[k]),
            "stop_p50_ms": median(stop_ms[k]),
            "tries_p50": median(tries[k]),
        }
        for k in samples
    }
    # Not part of the comparison: how much of our launch is pasta becoming
    # ready, as pelagos-net itself reports it with -v.
    ready = []
    for _ in range(max(3, n // 3)):
        argv = env.ours("--network", "pasta", "--port-driver", "pasta", "-p", f"{LOOPBACK}:{env.port()}:{NS_PORT}", "--", "true")
        argv.insert(1, "-v")
        p = env.spawn(argv)
        wait_exit(p, 10)
        reap_all()
        text = env.log_tail(4000)
        marks = [l for l in text.splitlines() if "network ready after" in l]
        if marks:
            ready.append(float(marks[-1].split("network ready after")[1].split()[0]))
    if ready:
        res["ours"]["ready_p50_ms"] = median(ready)
    return res


# --------------------------------------------------------------------------
# 3. command exit -> pelagos-net exit


STAMP = ["date", "+%s%N"]  # prints its own exit time as its last act


def exit_gap(env, argv):
    p = env.spawn(argv, stdout=subprocess.PIPE)
    rc = wait_exit(p, 10)
    reaped = time.time_ns()
    out = p.stdout.read().decode("ascii", "replace").split()
    p.stdout.close()
    stamps = [int(w) for w in out if w.isdigit() and len(w) >= 18]
    if rc != 0 or not stamps:
        raise BenchError(f"{' '.join(argv)} exited {rc}, printed {out!r}\n{env.log_tail()}")
    return (reaped - stamps[-1]) / 1e6


def bench_exit(env, n):
    cases = {
        "pasta": lambda: env.ours_fwd(env.port(), STAMP),
        "loopback": lambda: env.ours("--network", "loopback", "--", *STAMP),
        "bare_pasta": lambda: env.pasta_fwd(env.port(), STAMP),
        "floor": lambda: list(STAMP),
    }
    samples = {k: [] for k in cases}
    for i in range(n + 1):
        for k, mk in cases.items():
            gap = exit_gap(env, mk())
            reap_all()
            if i > 0:  # the first round is a warm-up
                samples[k].append(gap)
    return {k: {"p50": median(v), "p90": pct(v, 90), "min": min(v), "max": max(v), "n": len(v)} for k, v in samples.items()}


# --------------------------------------------------------------------------
# 5. attach -> ready, on a namespace that exists already


def holder(env):
    """A namespace someone else made: `unshare -Urn sleep` as the user.
    Returns the process once it is in its own network namespace."""
    p = env.spawn(["unshare", "--user", "--map-root-user", "--net", "sleep", "300"])
    env.tracker.add(p.pid)
    ours = os.stat("/proc/self/ns/net").st_ino
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        try:
            if os.stat(f"/proc/{p.pid}/ns/net").st_ino != ours:
                return p
        except OSError:
            pass
        if p.poll() is not None:
            break
        time.sleep(0.001)
    raise BenchError(f"unshare -Urn sleep did not enter a namespace\n{env.log_tail()}")


def attach_ours(env, pid, port):
    """pelagos-net attach (returns once the route is in and the port held);
    the time to its exit, then detach (not timed)."""
    argv = [env.bin, "--run-dir", env.run_dir, "--netns-dir", env.netns_dir, "attach",
            "--netns", f"/proc/{pid}/ns/net", "--network", "pasta", "--port-driver", "pasta",
            "-p", f"{LOOPBACK}:{port}:{NS_PORT}"]
    t0 = time.perf_counter()
    p = env.spawn(argv, stdout=subprocess.PIPE)
    rc = wait_exit(p, 10)
    t1 = time.perf_counter()
    out = p.stdout.read().decode().strip()
    p.stdout.close()
    if rc != 0 or not out:
        raise BenchError(f"{' '.join(argv)} exited {rc}\n{env.log_tail()}")
    for child in descendants(os.getpid()):
        env.tracker.add(child)
    d = env.spawn([env.bin, "--run-dir", env.run_dir, "--netns-dir", env.netns_dir, "detach", out])
    if wait_exit(d, 10) != 0:
        raise BenchError(f"detach {out} failed\n{env.log_tail()}")
    reap_all()
    return (t1 - t0) * 1e3


def attach_bare(env, pid, port):
    """Bare pasta joining the same kind of namespace (`pasta PID`): its
    parent exits once the namespace is configured and the port bound (it
    daemonizes then); the time to that exit, then pasta is stopped."""
    pidfile = os.path.join(env.run_dir, f"bare-pasta-{port}.pid")  # the user may write there
    argv = [env.pasta, "--config-net", "-t", f"{LOOPBACK}/{port}:{NS_PORT}", *PASTA_NOFWD, "-P", pidfile, str(pid)]
    t0 = time.perf_counter()
    p = env.spawn(argv)
    rc = wait_exit(p, 10)
    t1 = time.perf_counter()
    try:
        with open(pidfile) as f:
            daemon = int(f.read().strip())
        env.tracker.add(daemon)
        kill(daemon, signal.SIGTERM)
        os.unlink(pidfile)
    except (OSError, ValueError) as e:
        raise BenchError(f"bare pasta left no pid file ({e})\n{env.log_tail()}")
    if rc != 0:
        raise BenchError(f"{' '.join(argv)} exited {rc}\n{env.log_tail()}")
    reap_all()
    return (t1 - t0) * 1e3


def bench_attach(env, n):
    """Each attach gets a fresh namespace made the same way, created before
    the clock starts; ours and bare pasta alternate which goes first."""
    samples = {"ours": [], "peer": []}
    for i in range(n + 1):
        for k in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
            h = holder(env)
            try:
                ms = (attach_ours if k == "ours" else attach_bare)(env, h.pid, env.port())
            finally:
                kill(h.pid, signal.SIGKILL)
                wait_exit(h, 5)
                reap_all()
            if i > 0:  # the first pair is a warm-up
                samples[k].append(ms)
    return {k: {"p50": median(v), "p90": pct(v, 90), "min": min(v), "n": len(v)} for k, v in samples.items()}


# --------------------------------------------------------------------------
# 4. data path


def connect(port, timeout=30.0):
    return LOCAL.connect((LOOPBACK, port), timeout)


def wait_server(env, proc, port, limit=15.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise BenchError(f"{' '.join(proc.args)} exited {proc.returncode} before serving\n{env.log_tail()}")
        try:
            with connect(port, 0.5) as s:
                s.sendall(b"Ex")
                if s.recv(1) == b"x":
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise BenchError(f"server on 127.0.0.1:{port} not answering after {limit} s\n{env.log_tail()}")


class TransferFailed(Exception):
    pass


def throughput_once(port, nbytes, chunk):
    buf = memoryview(bytearray(b"\xa5" * chunk))
    with connect(port, 20.0) as s:
        s.sendall(b"S")
        t0 = time.perf_counter()
        left = nbytes
        while left:
            left -= s.send(buf[: min(chunk, left)])
        s.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while True:
                d = s.recv(64)
                if not d:
                    break
                reply += d
        except OSError as e:
            raise TransferFailed(f"{e!r} after {reply!r}") from None
        t1 = time.perf_counter()
    if reply != str(nbytes).encode():
        raise TransferFailed(f"sink confirmed {reply!r}, expected {nbytes}")
    return nbytes / (1 << 20) / (t1 - t0)


def throughput(port, nbytes, chunk, failures=None, attempts=3):
    """MiB/s of one transfer into the sink. The pasta build this was written
    against (2023-03-09) now and then loses or stalls the sink's reply after a
    large spliced transfer; such a transfer is retried (at most `attempts`
    times) and counted in `failures`, so it shows in the report."""
    for i in range(attempts):
        try:
            return throughput_once(port, nbytes, chunk)
        except TransferFailed as e:
            if failures is not None:
                failures.append(str(e))
            if i == attempts - 1:
                raise BenchError(f"sink on port {port}: {attempts} transfers failed, last: {e}") from None
            time.sleep(0.05)


def rtt(port, n):
    return _rtt(LOCAL, (LOOPBACK, port), n, timeout=30.0, where=f"port {port}")


def conn_close(port, n):
    return _conn_close(LOCAL, (LOOPBACK, port), n)


def conn_echo_close(port, n):
    return _conn_echo_close(LOCAL, (LOOPBACK, port), n, where=f"port {port}")


def pasta_of(pelagos_pid):
    for pid in descendants(pelagos_pid):
        st = proc_stat(pid)
        if st and st[2].startswith(("passt", "pasta")):
            return pid
    return None


def bench_data(env, rounds, nbytes, n_rtt, n_conn):
    server = [env.python, env.server, str(NS_PORT)]
    ports = {"ours": env.port(), "peer": env.port(), "direct": env.port()}
    # Pin (unless BENCH_PIN=0): the client on CPU 0; pelagos-net, pasta and
    # the server (or bare pasta and its server, or the direct server) on
    # CPU 1. Halves the round-to-round noise on a 2-CPU machine.
    pin = pinned()
    wrap = (lambda argv: ["taskset", "-c", "1", *argv]) if pin else (lambda argv: argv)
    old_affinity = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {0})
    procs = {}
    diag = {}
    done = False
    try:
        procs["ours"] = env.spawn(wrap(env.ours_fwd(ports["ours"], server)))
        procs["peer"] = env.spawn(wrap(env.pasta_fwd(ports["peer"], server)))
        procs["direct"] = env.spawn(wrap([env.python, env.server, str(ports["direct"]), LOOPBACK]))
        for k, p in procs.items():
            env.tracker.add(p.pid)
        for k, p in procs.items():
            wait_server(env, p, ports[k])
        for k, p in procs.items():
            for d in descendants(p.pid):
                env.tracker.add(d)
        # Which signals does each pasta start with blocked? (SIGTERM = bit 14)
        ours_pasta = pasta_of(procs["ours"].pid)
        diag["sigblk_pasta_under_pelagos"] = sig_blocked(ours_pasta) if ours_pasta else None
        diag["sigblk_bare_pasta"] = sig_blocked(procs["peer"].pid)

        keys = list(procs)
        tp = {k: [] for k in keys}
        tp_fail = {k: [] for k in keys}
        lat = {k: [] for k in keys}
        cc = {k: [] for k in keys}
        cec = {k: [] for k in keys}
        chunk = 1 << 20
        for k in keys:  # warm-up
            throughput(ports[k], min(nbytes, 32 << 20), chunk, tp_fail[k])
            conn_close(ports[k], 20)
        gc.disable()
        try:
            for r in range(rounds):
                order = keys[r % len(keys) :] + keys[: r % len(keys)]
                for k in order:
                    tp[k].append(throughput(ports[k], nbytes, chunk, tp_fail[k]))
                for k in order:
                    lat[k].extend(rtt(ports[k], max(1, n_rtt // rounds)))
                for k in order:
                    cc[k].extend(conn_close(ports[k], max(1, n_conn // rounds)))
                for k in order:
                    cec[k].extend(conn_echo_close(ports[k], max(1, n_conn // rounds)))
        finally:
            gc.enable()
        done = True
    finally:
        # Stop all three together: bare pasta's command first (it does not
        # die with pasta), then pelagos-net (forwards SIGTERM), pasta, server.
        errors = []
        if "peer" in procs:
            for pid in descendants(procs["peer"].pid):
                env.tracker.add(pid)
                kill(pid, signal.SIGTERM)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                wait_exit(p, 5.0)
            except BenchError as e:
                errors.append(str(e))
        reap_all()
        os.sched_setaffinity(0, old_affinity)
        if errors and done:
            raise BenchError("; ".join(errors))

    def per_round(series, n_rounds):
        """Split a flat sample list into its rounds and take each round's median."""
        size = len(series) // n_rounds
        return [median(series[i * size : (i + 1) * size]) for i in range(n_rounds)]

    rounds_of = {
        "mib_s": tp,
        "rtt_p50_us": {k: per_round(lat[k], rounds) for k in keys},
        "conn_p50_us": {k: per_round(cc[k], rounds) for k in keys},
        "conn_echo_p50_us": {k: per_round(cec[k], rounds) for k in keys},
    }
    res = {
        k: {
            "mib_s": median(tp[k]),
            "rtt_p50_us": median(lat[k]),
            "rtt_p90_us": pct(lat[k], 90),
            "conn_p50_us": median(cc[k]),
            "conn_echo_p50_us": median(cec[k]),
            "rounds": {m: v[k] for m, v in rounds_of.items()},
        }
        for k in keys
    }
    # ours/peer of the same round (measured back to back), so slow drifts of
    # the machine's load cancel out; the ratio reported is their median and
    # the noise their half inter-quartile range.
    res["paired"] = {}
    for m, v in rounds_of.items():
        ratios = [o / p for o, p in zip(v["ours"], v["peer"])]
        res["paired"][m] = {
            "ratio": median(ratios),
            "noise": (pct(ratios, 75) - pct(ratios, 25)) / 2,
            "all": ratios,
        }
    for k in keys:
        res[k]["transfer_retries"] = tp_fail[k]
    res["diag"] = diag
    return res


# --------------------------------------------------------------------------
# report


def render(results, meta):
    rows = []  # (metric, ours, peer, peer_label, ratio, goal, result)

    def row(metric, ours, peer, label, fmt, goal_txt="", ok=None, ratio=None, noise=None):
        r = ratio if ratio is not None else (ours / peer if peer else float("nan"))
        rows.append(
            (
                metric,
                fmt.format(ours),
                fmt.format(peer) if peer is not None else "-",
                label,
                (f"{r:.2f}" + (f" ±{noise:.2f}" if noise is not None else "")) if peer is not None else "-",
                goal_txt or "-",
                verdict(ok) if ok is not None else "info",
            )
        )

    s = results.get("startup")
    if s:
        o, p = s["ours"], s["peer"]
        row("1 startup p50 (ms)", o["p50"], p["p50"], "unshare -Urn", "{:.2f}", "ratio <= 1.30", o["p50"] / p["p50"] <= 1.3)
        row("  startup p90 (ms)", o["p90"], p["p90"], "unshare -Urn", "{:.2f}")
        row("  spawn floor: true (ms)", s["floor"]["p50"], None, "", "{:.2f}")
        if "isolated" in s:
            i = s["isolated"]
            row("  same isolation: unshare -Urnpm (ms)", i["p50"], p["p50"], "unshare -Urn", "{:.2f}")
            row("  startup vs same isolation", o["p50"], i["p50"], "unshare -Urnpm", "{:.2f}")
    lch = results.get("launch")
    if lch:
        o, p = lch["ours"], lch["peer"]
        row("2 launch->1st echo p50 (ms)", o["p50"], p["p50"], "bare pasta", "{:.1f}", "ratio <= 1.15", o["p50"] / p["p50"] <= 1.15)
        row("  launch->1st echo p90 (ms)", o["p90"], p["p90"], "bare pasta", "{:.1f}")
        row("  SIGTERM->exit p50 (ms)", o["stop_p50_ms"], p["stop_p50_ms"], "bare pasta", "{:.1f}")
        if "ready_p50_ms" in o:
            row("  ours: pasta spawn->ready (-v)", o["ready_p50_ms"], None, "", "{:.1f}")
    ex = results.get("exit")
    if ex:
        o, f = ex["pasta"], ex["loopback"]
        row("3 cmd exit->our exit -p (ms)", o["p50"], f["p50"], "--network loopback", "{:.2f}", "ours <= 5 ms", o["p50"] <= 5.0)
        row("  same, p90 (ms)", o["p90"], f["p90"], "--network loopback", "{:.2f}")
        row("  bare pasta: cmd->pasta exit", ex["bare_pasta"]["p50"], None, "", "{:.2f}")
        row("  floor: date reaped directly", ex["floor"]["p50"], None, "", "{:.2f}")
    d = results.get("data")
    if d:
        o, p, dl, pr = d["ours"], d["peer"], d["direct"], d["paired"]

        def drow(metric, key, fmt, goal_txt="", cmp=None):
            r = pr[key]["ratio"]
            row(metric, o[key], p[key], "bare pasta", fmt, goal_txt, cmp(r) if cmp else None, ratio=r,
                noise=pr[key]["noise"])

        drow("4 throughput (MiB/s)", "mib_s", "{:.0f}", "ratio >= 0.95", lambda r: r >= 0.95)
        drow("  1B round trip p50 (us)", "rtt_p50_us", "{:.1f}", "ratio <= 1.05", lambda r: r <= 1.05)
        drow("  connect+close p50 (us)", "conn_p50_us", "{:.1f}", "ratio <= 1.05", lambda r: r <= 1.05)
        drow("  connect+echo+close p50 (us)", "conn_echo_p50_us", "{:.1f}")
        row("  direct loopback: MiB/s", dl["mib_s"], None, "", "{:.0f}")
        row("  direct loopback: RTT p50 (us)", dl["rtt_p50_us"], None, "", "{:.1f}")
        row("  direct: connect+echo+close (us)", dl["conn_echo_p50_us"], None, "", "{:.1f}")
    at = results.get("attach")
    if at:
        o, p = at["ours"], at["peer"]
        row("5 attach->ready p50 (ms)", o["p50"], p["p50"], "bare pasta PID", "{:.1f}", "ratio <= 1.10", o["p50"] / p["p50"] <= 1.1)
        row("  attach->ready p90 (ms)", o["p90"], p["p90"], "bare pasta PID", "{:.1f}")

    head = ("metric", "ours", "peer", "peer is", "ratio", "goal", "result")
    out = [meta, ""] + table(head, rows, left=(0, 3, 5))
    if d:
        fails = {k: len(d[k].get("transfer_retries", [])) for k in ("ours", "peer", "direct")}
        if any(fails.values()):
            last = next(d[k]["transfer_retries"][-1] for k in ("ours", "peer", "direct") if fails[k])
            out.append("")
            out.append(
                f"note: throughput transfers retried (reply lost or stalled): ours {fails['ours']}, "
                f"bare pasta {fails['peer']}, direct {fails['direct']}; last: {last}"
            )
    diag = (d or {}).get("diag") or {}
    blk = diag.get("sigblk_pasta_under_pelagos")
    if blk is not None:
        names = [n for n, b in (("HUP", 0), ("INT", 1), ("QUIT", 2), ("USR1", 9), ("USR2", 11), ("TERM", 14), ("CHLD", 16), ("WINCH", 27)) if blk >> b & 1]
        out.append("")
        out.append(
            f"note: pasta started by pelagos-net has SigBlk={blk:016x} ({','.join(names) or 'none'} blocked); "
            f"bare pasta has SigBlk={diag.get('sigblk_bare_pasta') or 0:016x}"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------
# main


def fs_type(path):
    best, kind = "", "?"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def main():
    ap = arg_parser()
    ap.add_argument("--pasta", default="pasta")
    ap.add_argument("--only", default="startup,launch,exit,data,attach")
    a = ap.parse_args()
    if a.cleanup:
        return cleanup_mode(a)

    become_subreaper()

    q = a.quick
    n = {
        "startup": 40 if q else 200,
        "launch": 6 if q else 41,
        "exit": 6 if q else 30,
        "rounds": 3 if q else 24,
        "bytes": (64 if q else 256) << 20,
        "rtt": 300 if q else 2400,
        "conn": 60 if q else 480,
        "attach": 6 if q else 40,
    }
    env = Env(a)
    only = set(a.only.split(","))
    results = {"iterations": n}
    meta_host = os.uname()
    meta = (
        f"pelagos-net bench  kernel {meta_host.release}  cpus {os.cpu_count()}  "
        f"user {a.user} ({a.uid})  mode {'QUICK' if q else 'full'}\n"
        f"{a.label + chr(10) if a.label else ''}"
        f"run dir {a.run_dir} ({fs_type(a.run_dir)})\n"
        f"iterations: startup {n['startup']}x each, launch {n['launch']}x each, exit {n['exit']}x each, "
        f"data {n['rounds']} rounds x {n['bytes'] >> 20} MiB, {n['rtt']} round trips, {n['conn']} connects, "
        f"attach {n['attach']}x each"
        f" ({'pinned: client on CPU 0, everything else on CPU 1' if pinned() else 'not pinned'})"
    )

    def measure():
        if "startup" in only:
            print("[1/5] start-up ...", file=sys.stderr, flush=True)
            results["startup"] = bench_startup(env, n["startup"])
        if "launch" in only:
            print("[2/5] launch -> first echo ...", file=sys.stderr, flush=True)
            results["launch"] = bench_launch(env, n["launch"])
        if "exit" in only:
            print("[3/5] command exit -> pelagos-net exit ...", file=sys.stderr, flush=True)
            results["exit"] = bench_exit(env, n["exit"])
        if "data" in only:
            print("[4/5] data path ...", file=sys.stderr, flush=True)
            results["data"] = bench_data(env, n["rounds"], n["bytes"], n["rtt"], n["conn"])
        if "attach" in only:
            print("[5/5] attach -> ready ...", file=sys.stderr, flush=True)
            results["attach"] = bench_attach(env, n["attach"])
        return results

    return measure_and_report(a, env, meta, measure, render)

if __name__ == "__main__":
    sys.exit(main())

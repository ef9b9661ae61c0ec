#!/usr/bin/python3
"""pelagos-net-cni against the reference CNI plugins, side by side in one run.

Run by bench/cni/run inside a sandbox (a new network and mount namespace
with a private tmpfs on /run). Every plugin is run as libcni runs it: the
CNI_* environment, the exec config on stdin, timed from spawn to exit with
its stdout read. Container namespaces are made beforehand and not timed
(the runtime's job). Ours and the reference alternate container by
container, so load changes hit both alike.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import time

OURS = sys.argv[1]
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = 8 if QUICK else 40
SCALE = 30 if QUICK else 200
ONLY = {x for x in os.environ.get("BENCH_ONLY", "").split(",") if x}
REF = "/usr/lib/cni"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": REF}


def call(binary, cmd, cid, ns, conf):
    env = dict(ENV, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=f"/run/netns/{ns}", CNI_IFNAME="eth0")
    t = time.perf_counter()
    p = subprocess.run([binary], input=json.dumps(conf).encode(), env=env, capture_output=True)
    dt = (time.perf_counter() - t) * 1e3
    if p.returncode != 0:
        sys.exit(f"{binary} {cmd} {cid} failed: {p.stdout.decode()} {p.stderr.decode()}")
    return dt, (json.loads(p.stdout) if p.stdout.strip() else None)


def gone_after(t_start, link):
    """ms from t_start until host link `link` no longer exists (polled every
    0.1 ms with if_nametoindex, an ioctl in this network namespace)."""
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline:
        try:
            socket.if_nametoindex(link)
        except OSError:
            return (time.perf_counter() - t_start) * 1e3
        time.sleep(0.0001)
    sys.exit(f"link {link} still exists 5 s after DEL")


def reap_all():
    """Wait for every orphan the plugins left to us (this process is a
    child subreaper): pelagos-net-cni's exiting child, which deletes the
    veth pair and closes the nftables sockets after the plugin is gone."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def call_del_until_gone(binary, cid, ns, conf, link):
    """DEL, timed twice: until the plugin exits (what the runtime waits for),
    and until everything it deferred is done: the host end of the veth pair
    gone and the child that deleted it (and held the sockets) exited."""
    reap_all()
    t = time.perf_counter()
    dt, _ = call(binary, "DEL", cid, ns, conf)
    reap_all()
    return dt, gone_after(t, link)


def ns(name):
    subprocess.run(["ip", "netns", "add", name], check=True)


def del_ns(name):
    subprocess.run(["ip", "netns", "del", name], check=True)


def ours_conf(name, subnet, port=None):
    c = {"cniVersion": "1.0.0", "name": name, "type": "pelagos-net", "subnet": subnet,
         "runDir": "/run/st/run", "configDir": "/run/st/cfg"}
    if port:
        c["runtimeConfig"] = {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
    return c


def ref_bridge_conf(prev=None):
    c = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
         "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": "/run/st/ipam"}}
    if prev:
        c["prevResult"] = prev
    return c


def portmap_conf(prev, port):
    return {"cniVersion": "1.0.0", "name": "refnet", "type": "portmap", "snat": True,
            "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": prev}


def ref_add(cid, n, port=None):
    t1, res = call(f"{REF}/bridge", "ADD", cid, n, ref_bridge_conf())
    t2 = 0.0
    if port:
        t2, res = call(f"{REF}/portmap", "ADD", cid, n, portmap_conf(res, port))
    return t1 + t2, res


def ref_del(cid, n, final, port=None):
    t0 = time.perf_counter()
    t = 0.0
    if port:
        t += call(f"{REF}/portmap", "DEL", cid, n, portmap_conf(final, port))[0]
    t += call(f"{REF}/bridge", "DEL", cid, n, ref_bridge_conf(final))[0]
    gone = gone_after(t0, final["interfaces"][1]["name"])
    return t, gone


def med(xs):
    return statistics.median(xs)


def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.9))]


def pair(with_port):
    rows = {"ours_add": [], "ours_del": [], "ours_gone": [], "ref_add": [], "ref_del": [], "ref_gone": []}
    for i in range(N + 2):
        port = 20000 + i if with_port else None
        a, b = f"o{i}{'p' if with_port else ''}", f"r{i}{'p' if with_port else ''}"
        ns(a)
        ns(b)
        order = [0, 1] if i % 2 == 0 else [1, 0]
        for who in order:
            if who == 0:
                ta, res = call(OURS, "ADD", a, a, ours_conf("bench", "10.70.0.0/16", port))
                td, tg = call_del_until_gone(OURS, a, a, ours_conf("bench", "10.70.0.0/16", port),
                                             res["interfaces"][1]["name"])
                key = "ours"
            else:
                ta, res = ref_add(b, b, port)
                td, tg = ref_del(b, b, res, port)
                key = "ref"
            if i >= 2:
                rows[f"{key}_add"].append(ta)
                rows[f"{key}_del"].append(td)
                rows[f"{key}_gone"].append(tg)
        del_ns(a)
        del_ns(b)
    return rows


def spawn_true():
    """ms to spawn /bin/true and read its stdout as `call` does: the
    harness's own share of an ADD, measured beside each one (a control: it
    must not grow with the number of containers)."""
    t = time.perf_counter()
    subprocess.run(["/bin/true"], input=b"{}", env=ENV, capture_output=True)
    return (time.perf_counter() - t) * 1e3


def scale():
    adds, control = [], []
    for i in range(SCALE):
        n = f"s{i}"
        ns(n)
        control.append(spawn_true())
        adds.append(call(OURS, "ADD", n, n, ours_conf("scale", "10.71.0.0/16", 30000 + i))[0])
    dels = []
    for i in range(SCALE):
        n = f"s{i}"
        dels.append(call(OURS, "DEL", n, n, ours_conf("scale", "10.71.0.0/16", 30000 + i))[0])
        del_ns(n)
    return adds, dels, control


def main():
    import ctypes
    # PR_SET_CHILD_SUBREAPER: orphans of the plugins are reparented here.
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    t0 = time.time()
    want = lambda section: not ONLY or section in ONLY  # noqa: E731
    plain = pair(False) if want("plain") else None
    port = pair(True) if want("port") else None
    adds, dels, control = scale() if want("scale") else (None, None, None)
    rows = []

    def row(what, ours, peer, peer_name, goal, limit):
        ratio = ours / peer if peer else None
        ok = ratio is not None and ratio <= limit
        rows.append((what, f"{ours:.2f} ms", f"{peer:.2f} ms" if peer else "", peer_name,
                     f"{ratio:.3f}x" if ratio else "", goal, "PASS" if ok else "MISS"))

    for d, label, peer in ((plain, "no ports", ("bridge+host-local", "bridge DEL")),
                           (port, "1 port", ("bridge -> portmap", "portmap+bridge DEL"))):
        if not d:
            continue
        row(f"ADD, {label}", med(d["ours_add"]), med(d["ref_add"]), peer[0], "<= 0.1x", 0.1)
        row(f"DEL, {label}: runtime waits", med(d["ours_del"]), med(d["ref_del"]), peer[1], "<= 0.02x", 0.02)
        row(f"  DEL, {label}: all done", med(d["ours_gone"]), med(d["ref_gone"]), f"{peer[1]}, same", "(info)", 1e9)
    if adds:
        first, last = med(adds[:10]), med(adds[-10:])
        rows.append((f"ADD #1 vs #{SCALE} (1 port)", f"{first:.2f} -> {last:.2f} ms", "", "medians of first/last 10",
                     f"{last / first:.2f}x", "<= 1.2x", "PASS" if last / first <= 1.2 else "MISS"))
    widths = [max(len(str(r[i])) for r in rows + [HEAD]) for i in range(len(HEAD))]
    for r in [HEAD] + [tuple("-" * w for w in widths)] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    passed = sum(1 for r in rows if r[-1] == "PASS")
    print(f"{passed} PASS, {len(rows) - passed} MISS")
    print("runtime waits: spawn to the plugin's exit (what kubelet/containerd wait for; the address, the ports and")
    print("the record are released by then). all done: until everything the DEL left to its exiting child is done")
    print("too (the host end of the veth pair gone, that child reaped): the kernel's veth deletion, RCU waits included.")
    print("details (median / p90 ms):")
    for name, d in (("no ports", plain), ("1 port", port)):
        for k, v in (d or {}).items():
            print(f"  {name:8} {k:9} {med(v):7.2f} / {p90(v):7.2f}  n={len(v)}")
    if adds:
        step = max(1, SCALE // 10)
        print(f"  scale: ADD medians per {step}: "
              + " ".join(f"{med(adds[i:i + step]):.2f}" for i in range(0, SCALE, step))
              + f"; DEL with {SCALE} live (median of first 10) {med(dels[:10]):.2f} ms")
        print(f"  scale: harness control, /bin/true spawned before each ADD: {med(control[:10]):.2f} -> "
              f"{med(control[-10:]):.2f} ms (medians of first/last 10)")
    print(f"  measuring took {time.time() - t0:.0f} s")


HEAD = ("measurement", "ours", "peer", "peer is", "ratio", "goal", "result")

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The proxy scale bench; run through bench/proxy-scale.sh (root, release build).

For each size: generate manifests, start `svcnet run --proxy apply` in a fresh network
namespace with nft wrapped by a shim that records its max RSS, then measure
  - the first full sync: from start to its `proxy sync full=true` log line, and its own
    duration as logged;
  - one endpoint change: rewrite one EndpointSlice file, then the time until the sync log line
    and until `nft get element` shows the new endpoint in the kernel;
  - peak memory (VmHWM) of svcnet and the largest max RSS of any nft run;
  - the chains, sets/maps and elements of `ip svcnet` (one `nft -j list table` at the end).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import importlib

gen = importlib.import_module("gen-manifests")

ENDPOINTS = 10
NEW_ENDPOINT = "10.127.255.1"  # sorts before every generated address: slot 0
TIMEOUT = 900


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


class Log:
    """svcnet's stderr, each line with its arrival time."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, pattern, after=0):
        """The first (time, line) at index >= after matching pattern, and its index."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            i = after
            while True:
                while i < len(self.lines):
                    if regex.search(self.lines[i][1]):
                        return self.lines[i], i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(pattern + "\n" + "\n".join(l for _, l in self.lines[-20:]))
                self.cond.wait(left)


def duration_seconds(line):
    """The `duration=1.234s` (or ms, µs) field of a sync log line."""
    m = re.search(r"duration=([0-9.]+)(ms|µs|us|ns|s)\b", line)
    scale = {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[m.group(2)]
    return float(m.group(1)) * scale


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def svcnet_pid(pid):
    """`ip netns exec` may run svcnet as its child rather than exec it."""
    for _ in range(100):
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "svcnet":
                return pid
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        if children:
            pid = int(children[0])
        else:
            time.sleep(0.05)
    raise RuntimeError("svcnet process not found")


def run(size, binary):
    work = tempfile.mkdtemp(prefix=f"svcnet-bench-{size}-")
    netns = f"svcnet-bench-{os.getpid()}"
    manifests = os.path.join(work, "manifests")
    shim = os.path.join(work, "shim")
    rss_log = os.path.join(work, "nft-rss")
    os.makedirs(shim)
    with open(os.path.join(shim, "nft"), "w") as f:
        # %M: max RSS in KiB, one line per nft run.
        f.write(f'#!/bin/sh\nexec /usr/bin/time -f "%M" -a -o {rss_log} {shutil.which("nft")} "$@"\n')
    os.chmod(os.path.join(shim, "nft"), 0o755)

    t = time.monotonic()
    sh(sys.executable, os.path.join(HERE, "gen-manifests.py"), str(size), str(ENDPOINTS), manifests)
    generated = time.monotonic() - t

    sh("ip", "netns", "add", netns)
    proc = None
    try:
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", RUST_LOG="info")
        cmd = ["ip", "netns", "exec", netns, binary, "run", "--manifests", manifests,
               "--node-name", "node-a", "--proxy", "apply", "--upstreams=",
               "--dns-listen", "127.0.0.1:15353", "--metrics-listen", "127.0.0.1:19153"]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        log = Log(proc.stderr)
        pid = svcnet_pid(proc.pid)

        (t_full, line), i = log.wait_for(r"proxy sync.*full=true")
        first_sync = t_full - started
        first_sync_own = duration_seconds(line)
        hwm_after_full = vm_hwm_kib(pid)
        time.sleep(2)

        # One endpoint of svc-0 changes: the kernel shows it at slot 0 once synced.
        key = "{ 10.96.0.1 . tcp . 80 . 0 }"  # svc-0's ClusterIP, slot 0
        edit = time.monotonic()
        gen.write_edit_slice(manifests, ENDPOINTS, first=NEW_ENDPOINT)
        kernel = None
        while time.monotonic() - edit < TIMEOUT:
            out = subprocess.run(["ip", "netns", "exec", netns, "nft", "get", "element", "ip", "svcnet",
                                  "endpoints-tcp", key], capture_output=True, text=True).stdout
            if NEW_ENDPOINT in out:
                kernel = time.monotonic() - edit
                break
            time.sleep(0.01)
        (t_partial, line), _ = log.wait_for(r"proxy sync.*full=false", after=i + 1)
        change_log = t_partial - edit
        change_own = duration_seconds(line)

        t = time.monotonic()
        table = json.loads(sh("ip", "netns", "exec", netns, "nft", "-j", "list", "table", "ip", "svcnet").stdout)
        listing = time.monotonic() - t
        objects = [next(iter(o.items())) for o in table["nftables"] if "metainfo" not in o]
        chains = sum(1 for kind, _ in objects if kind == "chain")
        sets = sum(1 for kind, _ in objects if kind in ("set", "map"))
        elements = sum(len(body.get("elem", [])) for kind, body in objects if kind in ("set", "map"))

        metrics = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "http://127.0.0.1:19153/metrics"],
                                 capture_output=True, text=True).stdout
        hwm = vm_hwm_kib(pid)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["ip", "netns", "del", netns])

    with open(rss_log) as f:
        rss = [int(l) for l in f if l.strip().isdigit()]
    programming = re.search(r"^kubeproxy_network_programming_duration_seconds_sum (\S+)", metrics, re.M)
    observations = re.search(r"^kubeproxy_network_programming_duration_seconds_count (\S+)", metrics, re.M)
    shutil.rmtree(work)
    return {
        "services": size,
        "endpoints": size * ENDPOINTS,
        "generate_s": generated,
        "first_full_sync_from_start_s": first_sync,
        "first_full_sync_own_s": first_sync_own,
        "change_to_sync_log_s": change_log,
        "change_sync_own_s": change_own,
        "change_to_kernel_s": kernel,
        "network_programming_metric_sum_s": float(programming.group(1)) if programming else None,
        "network_programming_metric_count": float(observations.group(1)) if observations else None,
        "svcnet_vmhwm_mib": hwm / 1024,
        "svcnet_vmhwm_after_full_mib": hwm_after_full / 1024,
        "nft_max_rss_mib": max(rss) / 1024 if rss else None,
        "nft_runs": len(rss),
        "chains": chains,
        "sets_and_maps": sets,
        "elements": elements,
        "list_table_s": listing,
    }


def main():
    binary = os.path.join(ROOT, "target", "release", "svcnet")
    sizes = [int(s) for s in sys.argv[1:]] or [1000, 10000]
    print("| services | endpoints | first full sync: from start / own | change: to sync log / own / to kernel "
          "| svcnet VmHWM | nft max RSS | chains | sets+maps | elements |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        r = run(size, binary)
        print(json.dumps(r), file=sys.stderr)
        kernel = f"{r['change_to_kernel_s']:.2f} s" if r["change_to_kernel_s"] is not None else "n/a"
        print(f"| {r['services']:,} | {r['endpoints']:,} "
              f"| {r['first_full_sync_from_start_s']:.2f} s / {r['first_full_sync_own_s']:.2f} s "
              f"| {r['change_to_sync_log_s']:.2f} s / {r['change_sync_own_s'] * 1000:.0f} ms / {kernel} "
              f"| {r['svcnet_vmhwm_mib']:.0f} MiB | {r['nft_max_rss_mib']:.0f} MiB "
              f"| {r['chains']} | {r['sets_and_maps']} | {r['elements']:,} |", flush=True)


if __name__ == "__main__":
    main()

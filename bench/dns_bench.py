#!/usr/bin/env python3
"""The DNS bench: svcnet against CoreDNS on the same real control plane; run through
bench/dns.sh (root: taskset, apt-get for dnsperf), which builds both servers first.

  1. start target/controlplane (etcd + kube-apiserver + kube-controller-manager on loopback);
  2. create N Services in namespace `bench` through the API (stdlib urllib, the kubeconfig's
     admin token and CA): every other one headless. Each gets one EndpointSlice, created
     directly with the `kubernetes.io/service-name` label (there is no kubelet; for DNS this
     is what the EndpointSlice controller would write), of 10 ready endpoints; headless
     Services' endpoints carry StatefulSet-style hostnames `web-0` .. `web-9`;
  3. start CoreDNS (kubeadm's Corefile) and svcnet against that control plane, each pinned to
     CPU 0, and time each until it answers for the last Service created;
  4. write a query file (ClusterIP A, headless A, StatefulSet pod A, pod A records, SRV, PTR,
     NXDOMAIN search-list misses) and run dnsperf pinned to CPU 1 against each server: one run
     for the maximum throughput (and the server's CPU time during it), a second at a fixed
     rate, the same for both (half CoreDNS's maximum, or LATENCY_QPS), with `-v` (each
     reply's latency on stdout) for the latency percentiles;
  5. read VmRSS of each server after its sync and after the runs; print a table.

usage: dns_bench.py [SERVICES] (default 1000); env DURATION (seconds of the max-QPS run,
default 20; the fixed-rate run takes half), LATENCY_QPS
"""

import base64
import concurrent.futures
import ipaddress
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONTROLPLANE = os.path.join(ROOT, "target", "controlplane")
SVCNET = os.path.join(ROOT, "target", "release", "svcnet")
COREDNS = os.path.join(ROOT, "target", "bench-bin", "coredns")
ENDPOINTS = 10
POD_BASE = int(ipaddress.IPv4Address("10.128.0.0"))
NS = "bench"
SERVER_CPU = "0"
CLIENT_CPU = "1"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Api:
    def __init__(self, kubeconfig):
        # No YAML parser in the stdlib: take the three fields needed from the controlplane's
        # kubeconfig (one cluster, one user) line by line.
        server = token = ca = None
        for line in open(kubeconfig):
            line = line.strip()
            if line.startswith("server:"):
                server = line.split(":", 1)[1].strip().strip('"')
            elif line.startswith("token:"):
                token = line.split(":", 1)[1].strip().strip('"')
            elif line.startswith("certificate-authority-data:"):
                ca = base64.b64decode(line.split(":", 1)[1].strip().strip('"')).decode()
        self.server, self.token = server, token
        self.ctx = ssl.create_default_context(cadata=ca)

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=self.ctx, timeout=60) as r:
            return json.load(r)


def pod_ip(i, j):
    return str(ipaddress.IPv4Address(POD_BASE + i * ENDPOINTS + j))


def headless(i):
    return i % 2 == 1


def name(i):
    return f"hsvc-{i}" if headless(i) else f"svc-{i}"


def create_service(api, i):
    spec = {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    if headless(i):
        spec["clusterIP"] = "None"
    svc = api.request(
        "POST",
        f"/api/v1/namespaces/{NS}/services",
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name(i)}, "spec": spec},
    )
    endpoints = []
    for j in range(ENDPOINTS):
        ep = {"addresses": [pod_ip(i, j)], "conditions": {"ready": True}, "nodeName": "node-b"}
        if headless(i):
            ep["hostname"] = f"web-{j}"
        endpoints.append(ep)
    api.request(
        "POST",
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name(i)}-1",
                "labels": {"kubernetes.io/service-name": name(i)},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        },
    )
    return svc["spec"]["clusterIP"]


def reverse(ip):
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa."


def query_file(path, cluster_ips, n):
    """About 20k queries in a fixed random order; the answer expected of each kind is noted."""
    rng = random.Random(1)
    lines = []
    d = "cluster.local."
    for _ in range(20000):
        i = rng.randrange(n)
        j = rng.randrange(ENDPOINTS)
        kind = rng.randrange(10)
        s = f"{name(i)}.{NS}.svc.{d}"
        if kind == 0 or kind == 1:  # a Service's A: ClusterIP, or every endpoint if headless
            lines.append(f"{s} A")
        elif kind == 2:  # StatefulSet-style pod name under a headless Service
            h = i if headless(i) else i + 1 if i + 1 < n else i - 1
            lines.append(f"web-{j}.{name(h)}.{NS}.svc.{d} A")
        elif kind == 3:  # pod record
            lines.append(f"{pod_ip(i, j).replace('.', '-')}.{NS}.pod.{d} A")
        elif kind == 4:  # SRV
            lines.append(f"_http._tcp.{s} SRV")
        elif kind == 5:  # PTR: a ClusterIP, or an endpoint
            if cluster_ips[i] != "None":
                lines.append(f"{reverse(cluster_ips[i])} PTR")
            else:
                lines.append(f"{reverse(pod_ip(i, j))} PTR")
        else:  # search-list misses (ndots:5): 4 of 10, NXDOMAIN from the cluster zone
            miss = rng.choice(
                [
                    f"{s}{NS}.svc.{d}",
                    f"{s}svc.{d}",
                    f"{s}{d}",
                    f"example.com.{NS}.svc.{d}",
                ]
            )
            lines.append(f"{miss} A")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def dns_query(port, qname, qtype=1):
    """(rcode, answer count) of one UDP query, or None on timeout."""
    qid = random.randrange(65536)
    msg = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in qname.rstrip(".").split("."):
        msg += bytes([len(label)]) + label.encode()
    msg += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.05)
    try:
        s.sendto(msg, ("127.0.0.1", port))
        data = s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()
    _, flags, _, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    return flags & 0xF, an


def wait_answer(proc, port, qname, timeout=300):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        r = dns_query(port, qname)
        if r and r[0] == 0 and r[1] > 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise RuntimeError(f"no answer for {qname} on port {port}")


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dnsperf(port, queries, duration, verbose_out=None, rate=None):
    """Without rate: as fast as the server answers (500 queries outstanding). With rate: that
    many queries per second, each reply's latency written (-v) to verbose_out."""
    args = ["taskset", "-c", CLIENT_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", queries, "-l", str(duration), "-c", "8", "-q", "500", "-t", "2"]
    if rate:
        args += ["-Q", str(rate)]
    if verbose_out is None:
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        stats = {}
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Queries per second:"):
                stats["qps"] = float(line.split()[-1])
            elif line.startswith("Queries lost:"):
                stats["lost"] = line.split(":", 1)[1].strip()
            elif line.startswith("Average Latency"):
                stats["avg_latency"] = line.split(":", 1)[1].strip()
                stats["avg_ms"] = float(line.split(":", 1)[1].split()[0]) * 1000
            elif line.startswith("Response codes:"):
                stats["rcodes"] = line.split(":", 1)[1].strip()
        return stats, out
    with open(verbose_out, "w") as f:
        subprocess.run(args + ["-v"], check=True, stdout=f, stderr=subprocess.DEVNULL)
    # Lines of -v: `> NOERROR name A 0.000123` (the reply's latency in seconds, last field).
    lat = []
    for line in open(verbose_out):
        if line.startswith(">"):
            try:
                lat.append(float(line.split()[-1]))
            except ValueError:
                pass
    lat.sort()
    qps_v = float("nan")
    for line in open(verbose_out):
        if line.strip().startswith("Queries per second:"):
            qps_v = float(line.split()[-1])

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {"n": len(lat), "qps_v": qps_v, "p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9)}


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    duration = int(os.environ.get("DURATION", "20"))
    work = tempfile.mkdtemp(prefix="svcnet-dns-bench-")
    kubeconfig = os.path.join(work, "kubeconfig")
    procs = []
    try:
        cp = subprocess.Popen(
            [CONTROLPLANE, "--etcd-port", str(free_port()), "--apiserver-port", str(free_port()),
             "--kubeconfig-out", kubeconfig],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "controlplane.log"), "w"),
            text=True,
        )
        procs.append(cp)
        line = cp.stdout.readline()
        if not line.startswith("controlplane ready"):
            raise RuntimeError(f"controlplane: {line!r}; see {work}/controlplane.log")
        api = Api(kubeconfig)
        api.request("POST", "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        t = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            cluster_ips = list(pool.map(lambda i: create_service(api, i), range(n)))
        print(f"created {n} Services and {n} EndpointSlices in {time.monotonic() - t:.1f} s",
              flush=True)
        queries = os.path.join(work, "queries.txt")
        query_file(queries, cluster_ips, n)

        unused = free_port()
        last = n - 1 if headless(n - 1) else n - 2
        probe = f"web-{ENDPOINTS - 1}.{name(last)}.{NS}.svc.cluster.local."
        results = {}
        rate = None

        coredns_port = free_port()
        corefile = os.path.join(work, "Corefile")
        with open(corefile, "w") as f:
            f.write(f""".:{coredns_port} {{
    bind 127.0.0.1
    errors
    ready 127.0.0.1:{free_port()}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . 127.0.0.1:{unused} {{
        max_concurrent 1000
    }}
    cache 30
    loadbalance
}}
""")
        svcnet_port = free_port()
        servers = {
            "CoreDNS": (
                [COREDNS, "-conf", corefile],
                coredns_port,
            ),
            "svcnet": (
                [SVCNET, "run", "--kubeconfig", kubeconfig, "--node-name", "node-a",
                 "--dns-listen", f"127.0.0.1:{svcnet_port}", f"--upstreams=127.0.0.1:{unused}",
                 f"--ready-listen=127.0.0.1:{free_port()}", f"--metrics-listen=",
                 f"--health-listen=", "--autopath=false"],
                svcnet_port,
            ),
        }
        for label, (argv, port) in servers.items():
            log = open(os.path.join(work, f"{label}.log"), "w")
            proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + argv, stdout=log,
                                    stderr=subprocess.STDOUT)
            procs.append(proc)
            r = {"sync_s": wait_answer(proc, port, probe)}
            time.sleep(2)
            r["rss_sync"] = rss_mib(proc.pid)
            cpu = cpu_seconds(proc.pid)
            t = time.monotonic()
            stats, out = dnsperf(port, queries, duration)
            r["cpu"] = 100 * (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - t)
            r.update(stats)
            with open(os.path.join(work, f"{label}.dnsperf.txt"), "w") as f:
                f.write(out)
            # The latency run: the same rate for both servers, half of CoreDNS's maximum
            # (CoreDNS runs first) unless LATENCY_QPS is set.
            rate = rate or int(os.environ.get("LATENCY_QPS", "0")) or int(r["qps"] / 2)
            r["rate"] = rate
            r.update(dnsperf(port, queries, max(5, duration // 2),
                             os.path.join(work, f"{label}.verbose.txt"), rate))
            r["rss_after"] = rss_mib(proc.pid)
            print(label, json.dumps(r), flush=True)
            results[label] = r
            stop(proc)

        c, s = results["CoreDNS"], results["svcnet"]
        rows = [
            ("first answer after start (s)", "sync_s", "{:.2f}"),
            ("max QPS", "qps", "{:.0f}"),
            ("server CPU in that run (% of 1)", "cpu", "{:.0f}"),
            ("average latency at max (ms)", "avg_ms", "{:.3f}"),
            ("fixed-rate run: QPS answered", "qps_v", "{:.0f}"),
            ("  latency p50 (ms)", "p50", "{:.3f}"),
            ("  latency p90 (ms)", "p90", "{:.3f}"),
            ("  latency p99 (ms)", "p99", "{:.3f}"),
            ("  latency p99.9 (ms)", "p999", "{:.3f}"),
            ("VmRSS after sync (MiB)", "rss_sync", "{:.1f}"),
            ("VmRSS after the runs (MiB)", "rss_after", "{:.1f}"),
        ]
        print(f"\n{n} Services ({n // 2} headless), {n * ENDPOINTS} endpoints; "
              f"{duration} s per max-QPS run, {max(5, duration // 2)} s at a fixed "
              f"{results['CoreDNS']['rate']} QPS; work dir {work}")
        print(f"| {'':32} | {'CoreDNS':>10} | {'svcnet':>10} | {'svcnet/CoreDNS':>14} |")
        print(f"|{'-' * 34}|{'-' * 12}|{'-' * 12}|{'-' * 16}|")
        for label, key, fmt in rows:
            print(f"| {label:32} | {fmt.format(c[key]):>10} | {fmt.format(s[key]):>10} | "
                  f"{s[key] / c[key]:>14.2f} |")
        for label, r in results.items():
            print(f"{label}: lost {r.get('lost')}; rcodes {r.get('rcodes')}; "
                  f"dnsperf average latency {r.get('avg_latency')}")
    finally:
        for p in reversed(procs):
            stop(p)


if __name__ == "__main__":
    main()

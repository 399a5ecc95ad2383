#!/usr/bin/env python3
"""Writes a directory of manifests for the proxy scale bench: N ClusterIP Services (TCP 80 to
8080), each with one EndpointSlice of E ready endpoints on another node.

Objects go into JSON `kind: List` files of 1000 (JSON parses faster than YAML, and a few
hundred files are read faster than 100k). The slice of the first Service is alone in
`slice-edit.json`, so that the bench can change one endpoint by rewriting one small file.

usage: gen-manifests.py SERVICES ENDPOINTS DIR
"""

import ipaddress
import json
import os
import sys

CHUNK = 1000
# 10.96.0.0/12 holds 1M ClusterIPs; 10.128.0.0/9 holds 8M Pod addresses.
SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.0"))
POD_BASE = int(ipaddress.IPv4Address("10.128.0.0"))


def service(i):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i}", "namespace": "bench"},
        "spec": {
            "clusterIP": str(ipaddress.IPv4Address(SERVICE_BASE + 1 + i)),
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoint_slice(i, endpoints, first=None):
    addresses = [str(ipaddress.IPv4Address(POD_BASE + i * endpoints + j)) for j in range(endpoints)]
    if first is not None:
        addresses[0] = first
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-1",
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": f"svc-{i}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [a], "conditions": {"ready": True}, "nodeName": "node-b"}
            for a in addresses
        ],
    }


def write_list(path, items):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)
    # Renamed into place so svcnet never reads half a file.
    os.rename(tmp, path)


def write_edit_slice(directory, endpoints, first=None):
    write_list(os.path.join(directory, "slice-edit.json"), [endpoint_slice(0, endpoints, first)])


def main():
    services, endpoints, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(directory, exist_ok=True)
    write_list(
        os.path.join(directory, "namespace.json"),
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}],
    )
    for start in range(0, services, CHUNK):
        indices = range(start, min(start + CHUNK, services))
        write_list(os.path.join(directory, f"services-{start:06}.json"), [service(i) for i in indices])
        slices = [endpoint_slice(i, endpoints) for i in indices if i != 0]
        write_list(os.path.join(directory, f"slices-{start:06}.json"), slices)
    write_edit_slice(directory, endpoints)


if __name__ == "__main__":
    main()

//! Search completion seen from a real resolver: a Pod of this node (a network namespace with
//! the Pod's address and kubelet's resolv.conf) looks up a name outside the cluster with glibc's
//! `getent ahosts`, and svcnet counts the queries it received. The upstream is a second svcnet
//! serving the zone `example.org`, where `web.shop.svc.example.org` exists.

use std::{fs, path::Path, thread, time::Duration};

use crate::resolvers::{Netns, run, spawn_svcnet};

/// The Pod's address, on its loopback: queries to it leave from it, so svcnet sees the Pod.
const POD_IP: &str = "10.244.1.5";
/// The external name: four dots, fewer than ndots, so the search list comes first.
const EXTERNAL: &str = "web.shop.svc.example.org";

/// kubelet's resolv.conf for a ClusterFirst Pod in `shop` on a node without search domains.
fn pod_resolv_conf() -> String {
    format!(
        "nameserver {POD_IP}\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
}

/// The example cluster plus the client Pod, on node `n1`.
fn manifests(dir: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    for entry in fs::read_dir(&examples).expect("examples") {
        let path = entry.expect("entry").path();
        fs::copy(&path, dir.join(path.file_name().unwrap())).expect("copy manifest");
    }
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: shop\nspec:\n  nodeName: n1\n  \
         containers:\n    - name: app\n      image: app\nstatus:\n  phase: Running\n  podIP: {POD_IP}\n  \
         podIPs:\n    - ip: {POD_IP}\n"
    );
    fs::write(dir.join("client.yaml"), pod).expect("write the client Pod");
}

/// One `getent ahosts EXTERNAL` from the Pod; returns the queries svcnet received for it and
/// the addresses getent printed.
fn one_lookup(autopath: bool) -> (u64, Vec<String>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    manifests(dir.path());
    let netns = Netns::create(&pod_resolv_conf());
    run(
        netns
            .command("ip")
            .args(["addr", "add", &format!("{POD_IP}/32"), "dev", "lo"]),
        "ip addr add",
    );
    // glibc's `getent ahosts` asks AAAA only on a host with an IPv6 address (AI_ADDRCONFIG), as
    // a dual-stack Pod has.
    run(
        netns
            .command("ip")
            .args(["-6", "addr", "add", "fd00:10:244:1::5/128", "dev", "lo", "nodad"]),
        "ip -6 addr add",
    );
    let svcnet = env!("CARGO_BIN_EXE_svcnet");
    let mut upstream = netns.command(svcnet);
    upstream.arg("run").arg("--manifests").arg(dir.path());
    upstream.args([
        "--cluster-domain",
        "example.org",
        "--dns-listen",
        "127.0.0.1:5300",
        "--upstreams=",
    ]);
    let mut upstream = spawn_svcnet(upstream);
    let mut node = netns.command(svcnet);
    node.arg("run").arg("--manifests").arg(dir.path());
    node.args(["--node-name", "n1", "--dns-listen", &format!("{POD_IP}:53")]);
    node.args([
        "--upstreams",
        "127.0.0.1:5300",
        "--metrics-listen",
        "127.0.0.1:9153",
    ]);
    node.arg(format!("--autopath={autopath}"));
    let mut node = spawn_svcnet(node);

    // Serving, and the upstream too: the external name resolves.
    let mut ready = false;
    for _ in 0..200 {
        upstream.assert_running("svcnet");
        node.assert_running("svcnet");
        let probe = netns
            .command("getent")
            .args(["hosts", &format!("{EXTERNAL}.")])
            .output();
        if probe.is_ok_and(|o| o.status.success()) {
            ready = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "not serving:\n{}\n{}", node.log(), upstream.log());

    let before = requests(&netns);
    let lookup = run(
        netns.command("getent").args(["ahosts", EXTERNAL]),
        "getent ahosts",
    );
    thread::sleep(Duration::from_millis(200));
    let after = requests(&netns);
    let stdout = String::from_utf8_lossy(&lookup.stdout);
    let mut addresses: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    addresses.dedup();
    if autopath {
        assert!(
            metrics(&netns).contains("coredns_autopath_success_total{server=\"dns://10.244.1.5:53\"} 2"),
            "{}",
            metrics(&netns)
        );
    }
    (after - before, addresses)
}

/// svcnet's `/metrics`, fetched inside the namespace with bash's /dev/tcp.
fn metrics(netns: &Netns) -> String {
    let script = "exec 3<>/dev/tcp/127.0.0.1/9153; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    let output = run(netns.command("bash").args(["-c", script]), "fetch /metrics");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every request svcnet counted so far.
fn requests(netns: &Netns) -> u64 {
    metrics(netns)
        .lines()
        .filter(|l| l.starts_with("coredns_dns_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn completion_turns_a_search_walk_into_one_round_trip() {
    let (with, addresses) = one_lookup(true);
    assert_eq!(addresses, ["10.96.0.80"]);
    let (without, addresses) = one_lookup(false);
    assert_eq!(addresses, ["10.96.0.80"]);
    println!(
        "queries svcnet received for one `getent ahosts {EXTERNAL}`: {with} with autopath, {without} without"
    );
    // glibc asks A and AAAA for each name it tries: with ndots:5 and three search domains, the
    // three searched names and the name itself.
    assert_eq!((with, without), (2, 8));
}

//! The Service proxy with real packets: `svcnet run --proxy apply` programs nftables inside a
//! node's network namespace, and connections from Pods and from an external host cross those
//! rules to servers in other Pods (the topology is `svcnet_integration::netns`). Each server
//! answers with its Pod's name and the source address it saw, so a test sees which endpoint it
//! reached and whether it was masqueraded.
//!
//! Nothing here asserts on the ruleset's text: only on where packets go. Each test prints what it
//! measured (first sync, time for a change to show, slowest attempt) next to its bound.
//!
//! Like the resolver tests these need root, `ip` (iproute2), `nft` (nftables) and `python3`
//! (servers and clients); without them they fail and say why.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};
use svcnet_integration::{
    netns::{
        Attempt, EXTERNAL_NODE_V4, EXTERNAL_V4, Host, LINK_V4, Node, Outcome, Pod, Probe, Process, Topology,
        summarize,
    },
    write_objects,
};

/// The port every test server listens on: the Services' `targetPort`.
const SERVER_PORT: u16 = 8080;
/// The Services' port, TCP and UDP.
const SERVICE_PORT: u16 = 80;
/// The Pod CIDRs given to svcnet: the Pods of node N are 10.244.N.x and fd00:10:244:N::x.
const CLUSTER_CIDRS: &str = "10.244.0.0/16,fd00:10:244::/56";
/// How long svcnet may take from start to its first rules.
const FIRST_SYNC: Duration = Duration::from_secs(20);
/// How long a manifest change may take to reach the datapath: svcnet promises a second
/// (debounce, minimum sync period, nft); the rest is slack for a loaded CI machine.
const CONVERGE: Duration = Duration::from_secs(3);
/// A refused connection must be refused at once, not after a timeout.
const PROMPT: Duration = Duration::from_secs(1);
/// The timeout of attempts that are expected to time out (dropped packets).
const DROP_TIMEOUT: Duration = Duration::from_secs(1);

/// The harness alone, without svcnet: Pods reach each other on one node and across nodes, on
/// both families, without NAT; and a hand-written DNAT rule on the node takes the external host
/// to a Pod. When this fails, the topology is broken, not svcnet.
#[test]
fn harness_routes_pods_nodes_and_the_external_host() {
    let mut topo = Topology::new();
    let a = topo.node();
    let b = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10", "fd00:10:244:1::10"]);
    let local = serving_pod(&mut topo, &a, "local", 11);
    topo.link(&a, &b);
    let remote = serving_pod(&mut topo, &b, "remote", 11);
    let external = topo.external(&a);

    for server in [&local, &remote] {
        for (target, source) in [(server.ipv4(), client.ipv4()), (server.ipv6(), client.ipv6())] {
            let target = SocketAddr::new(target, SERVER_PORT);
            for probe in [Probe::tcp(target), Probe::udp(target)] {
                let attempt = probe.once(&client);
                assert_eq!(
                    attempt.outcome,
                    reply(server, source),
                    "{probe:?} from the client Pod"
                );
            }
        }
    }

    nft(
        &a,
        &format!(
            "table ip harness {{
                chain prerouting {{
                    type nat hook prerouting priority dstnat;
                    ip daddr {EXTERNAL_NODE_V4} tcp dport 30080 dnat to {}:{SERVER_PORT}
                }}
            }}",
            local.ipv4()
        ),
    );
    let attempt = Probe::tcp(SocketAddr::new(EXTERNAL_NODE_V4.into(), 30080)).once(&external);
    assert_eq!(
        attempt.outcome,
        reply(&local, EXTERNAL_V4.into()),
        "DNAT from the external host"
    );
    // Nothing listens on the node itself: refused at once.
    let attempt = Probe::tcp(SocketAddr::new(EXTERNAL_NODE_V4.into(), 9)).once(&external);
    assert_eq!(attempt.outcome, Outcome::Refused);
    println!(
        "harness: pod↔pod, node↔node, DNAT from outside all fine; refused in {:?}",
        attempt.elapsed
    );
}

/// A ClusterIP from a Pod: 30 connections spread over all 3 endpoints (the chance that a
/// uniform choice misses one is 3·(2/3)^30 ≈ 1.5e-5), and the endpoints see the client's own
/// address: traffic inside the cluster CIDR is not masqueraded. Same for UDP datagrams.
#[test]
fn cluster_ip_spreads_connections_over_every_endpoint() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let endpoints: Vec<Pod> = (0..3)
        .map(|i| serving_pod(&mut topo, &a, &format!("web-{i}"), 20 + i))
        .collect();
    let web = Service::cluster_ip("web", &["10.96.0.10"]);
    let proxy = Proxy::start(&a, &web.objects(&ready(&endpoints)));

    for probe in [Probe::tcp(web.vip_v4()), Probe::udp(web.vip_v4())] {
        let attempts = probe.count(30).run(&client);
        let counts = assert_replies_from(&proxy, &attempts, &endpoints, Some(client.ipv4()));
        assert_eq!(
            counts.len(),
            3,
            "30 attempts should reach all 3 endpoints: {}",
            summarize(&attempts)
        );
        println!(
            "cluster IP {:?}: {counts:?}, slowest {:?} (timeout {:?})",
            probe.proto(),
            slowest(&attempts),
            Duration::from_secs(2)
        );
    }
}

/// A NodePort from outside the cluster, externalTrafficPolicy Cluster: the node forwards to
/// an endpoint and masquerades, so the endpoint sees one of the node's addresses, not the client.
#[test]
fn node_port_from_outside_is_masqueraded() {
    let mut topo = Topology::new();
    let a = topo.node();
    let external = topo.external(&a);
    let endpoints = vec![
        serving_pod(&mut topo, &a, "web-0", 20),
        serving_pod(&mut topo, &a, "web-1", 21),
    ];
    let web = Service::cluster_ip("web", &["10.96.0.10"]).node_port(30080, Policy::Cluster);
    let proxy = Proxy::start(&a, &web.objects(&ready(&endpoints)));
    let node_addresses = topo.node_addresses(&a);

    let target = SocketAddr::new(EXTERNAL_NODE_V4.into(), 30080);
    for probe in [Probe::tcp(target), Probe::udp(target)] {
        let attempts = probe.count(10).run(&external);
        assert_replies_from(&proxy, &attempts, &endpoints, None);
        for attempt in &attempts {
            let Outcome::Reply { peer, .. } = attempt.outcome else {
                unreachable!()
            };
            assert!(
                peer != IpAddr::from(EXTERNAL_V4) && node_addresses.contains(&peer),
                "{:?}: the endpoint should see a node address ({node_addresses:?}), saw {peer}",
                probe.proto()
            );
        }
        println!(
            "NodePort {:?} from outside: {}; slowest {:?}",
            probe.proto(),
            summarize(&attempts),
            slowest(&attempts)
        );
    }
}

/// An endpoint that is not ready gets no connection, while the ready ones get them all.
#[test]
fn unready_endpoint_gets_no_connections() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let ready_pods = vec![
        serving_pod(&mut topo, &a, "web-0", 20),
        serving_pod(&mut topo, &a, "web-1", 21),
    ];
    let unready = serving_pod(&mut topo, &a, "web-unready", 22);
    let web = Service::cluster_ip("web", &["10.96.0.10"]);
    let mut endpoints = ready(&ready_pods);
    endpoints.push(Endpoint {
        pod: &unready,
        ready: false,
    });
    let proxy = Proxy::start(&a, &web.objects(&endpoints));

    let attempts = Probe::tcp(web.vip_v4()).count(30).run(&client);
    let counts = assert_replies_from(&proxy, &attempts, &ready_pods, Some(client.ipv4()));
    println!("30 connections with one endpoint unready: {counts:?}");
}

/// A Service without endpoints refuses at once: TCP with a reset (or ICMP port unreachable),
/// UDP with ICMP port unreachable, which a connected UDP socket reports as ECONNREFUSED.
#[test]
fn service_without_endpoints_refuses_at_once() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10", "fd00:10:244:1::10"]);
    let empty = Service::cluster_ip("empty", &["10.96.0.11", "fd00:10:96::11"]);
    let _proxy = Proxy::start(&a, &empty.objects(&[]));

    for vip in [empty.vip_v4(), empty.vip_v6()] {
        for probe in [Probe::tcp(vip), Probe::udp(vip)] {
            let attempts = probe.count(3).run(&client);
            for attempt in &attempts {
                assert!(
                    attempt.outcome == Outcome::Refused && attempt.elapsed < PROMPT,
                    "{:?} to {vip}: want refused within {PROMPT:?}, got {attempt:?}",
                    probe.proto()
                );
            }
            println!(
                "no endpoints, {:?} to {vip}: refused, slowest in {:?} (bound {PROMPT:?})",
                probe.proto(),
                slowest(&attempts)
            );
        }
    }
}

/// Hairpin: a Pod that reaches its own Service and is picked as the endpoint gets through.
/// Without masquerading its own packet would arrive from its own address and be dropped as a
/// martian, or the reply would skip the node's reverse NAT.
#[test]
fn pod_reaches_itself_through_its_service() {
    let mut topo = Topology::new();
    let a = topo.node();
    let web = serving_pod(&mut topo, &a, "web-0", 20);
    let service = Service::cluster_ip("web", &["10.96.0.10"]);
    let proxy = Proxy::start(&a, &service.objects(&ready([&web])));

    for probe in [Probe::tcp(service.vip_v4()), Probe::udp(service.vip_v4())] {
        let attempts = probe.count(5).run(&web);
        assert_replies_from(&proxy, &attempts, [&web], None);
        println!(
            "hairpin {:?}: {} (the Pod's own address is {})",
            probe.proto(),
            summarize(&attempts),
            web.ipv4()
        );
    }
}

/// `externalTrafficPolicy: Local`: a NodePort from outside reaches only this node's endpoint,
/// which sees the client's own address; when only another node has endpoints, the connection
/// is dropped (it times out), not refused.
#[test]
fn external_traffic_policy_local_keeps_the_client_address() {
    let mut topo = Topology::new();
    let a = topo.node();
    let b = topo.node();
    topo.link(&a, &b);
    let external = topo.external(&a);
    let local = serving_pod(&mut topo, &a, "local", 20);
    let remote = serving_pod(&mut topo, &b, "remote", 20);
    let both = Service::cluster_ip("both", &["10.96.0.12"]).node_port(30081, Policy::Local);
    let remote_only = Service::cluster_ip("remote-only", &["10.96.0.13"]).node_port(30082, Policy::Local);
    let mut objects = both.objects(&ready([&local, &remote]));
    objects.extend(remote_only.objects(&ready([&remote])));
    let proxy = Proxy::start(&a, &objects);

    let target = SocketAddr::new(EXTERNAL_NODE_V4.into(), 30081);
    for probe in [Probe::tcp(target), Probe::udp(target)] {
        let attempts = probe.count(20).run(&external);
        assert_replies_from(&proxy, &attempts, [&local], Some(EXTERNAL_V4.into()));
        println!("eTP=Local {:?}: {}", probe.proto(), summarize(&attempts));
    }

    let target = SocketAddr::new(EXTERNAL_NODE_V4.into(), 30082);
    for probe in [Probe::tcp(target), Probe::udp(target)] {
        let attempts = probe.timeout(DROP_TIMEOUT).count(2).run(&external);
        for attempt in &attempts {
            assert_eq!(
                attempt.outcome,
                Outcome::Timeout,
                "eTP=Local without a local endpoint, {:?}: want dropped (a timeout), got {attempt:?}\n{}",
                probe.proto(),
                proxy.log()
            );
        }
        println!(
            "eTP=Local without local endpoints, {:?}: timed out after {:?} (timeout {DROP_TIMEOUT:?})",
            probe.proto(),
            slowest(&attempts)
        );
    }
}

/// UDP through a ClusterIP follows a change of endpoint: once the old Pod is replaced by
/// another, new datagrams (from fresh source ports) reach the new Pod within [`CONVERGE`].
#[test]
fn udp_follows_an_endpoint_change() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let old = serving_pod(&mut topo, &a, "old", 20);
    let new = serving_pod(&mut topo, &a, "new", 21);
    let dns = Service::cluster_ip("dns", &["10.96.0.14"]);
    let proxy = Proxy::start(&a, &dns.objects(&ready([&old])));

    let probe = Probe::udp(dns.vip_v4());
    assert_replies_from(&proxy, &probe.count(5).run(&client), [&old], None);

    proxy.update(&dns.objects(&ready([&new])));
    let took = eventually(
        &proxy,
        "a datagram reaches the new endpoint",
        CONVERGE,
        || probe.timeout(Duration::from_millis(300)).once(&client),
        |a| a.server() == Some("new"),
    );
    let attempts = probe.count(20).run(&client);
    assert_replies_from(&proxy, &attempts, [&new], None);
    println!("UDP: new endpoint reached {took:?} after the change (bound {CONVERGE:?}), then 20 of 20");
}

/// The same UDP flow (one socket, one 5-tuple) moves to the new endpoint too: the proxy must
/// delete the flow's conntrack entry when its endpoint goes, as kube-proxy does, or datagrams
/// keep going to the old Pod for as long as the flow lasts.
#[test]
fn udp_flow_moves_when_its_endpoint_is_removed() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let old = serving_pod(&mut topo, &a, "old", 20);
    let new = serving_pod(&mut topo, &a, "new", 21);
    let dns = Service::cluster_ip("dns", &["10.96.0.14"]);
    let proxy = Proxy::start(&a, &dns.objects(&ready([&old])));

    // 10 datagrams a second for 5 s from one socket; the endpoint changes after 1 s.
    let flow = Probe::udp(dns.vip_v4())
        .same_socket()
        .timeout(Duration::from_millis(300))
        .interval(Duration::from_millis(100))
        .count(50)
        .spawn(&client);
    std::thread::sleep(Duration::from_secs(1));
    let changed = SystemTime::now();
    proxy.update(&dns.objects(&ready([&new])));
    let attempts = flow.wait();

    let before: Vec<&Attempt> = attempts.iter().filter(|a| a.started < changed).collect();
    assert!(
        !before.is_empty() && before.iter().all(|a| a.server() == Some("old")),
        "before the change the flow should reach the old endpoint: {}",
        summarize(&attempts)
    );
    let first_new = attempts.iter().position(|a| a.server() == Some("new"));
    let Some(first_new) = first_new else {
        let watched = attempts
            .last()
            .and_then(|a| a.started.duration_since(changed).ok())
            .unwrap_or_default();
        panic!(
            "the UDP flow never moved to the new endpoint in the {watched:?} after the change: {}\n{}",
            summarize(&attempts),
            proxy.log()
        );
    };
    let took = attempts[first_new]
        .started
        .duration_since(changed)
        .unwrap_or_default();
    assert!(took <= CONVERGE, "the flow moved only {took:?} after the change");
    assert!(
        attempts[first_new..].iter().all(|a| a.server() == Some("new")),
        "after moving, the flow should stay with the new endpoint: {}",
        summarize(&attempts)
    );
    println!("UDP flow moved {took:?} after the change (bound {CONVERGE:?})");
}

/// `sessionAffinity: ClientIP` (timeout 2 s): 20 connections from one client all reach one of
/// the 3 endpoints; once no new connection came for the timeout, new ones are balanced again
/// and, within a few rounds, reach another endpoint.
#[test]
fn client_ip_affinity_sticks_until_the_timeout() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let other = topo.pod(&a, "other", &["10.244.1.11"]);
    let endpoints: Vec<Pod> = (0..3)
        .map(|i| serving_pod(&mut topo, &a, &format!("web-{i}"), 20 + i))
        .collect();
    let web = Service::cluster_ip("web", &["10.96.0.20"]);
    let mut objects = web.objects(&ready(&endpoints));
    objects[0]["spec"]["sessionAffinity"] = json!("ClientIP");
    objects[0]["spec"]["sessionAffinityConfig"] = json!({ "clientIP": { "timeoutSeconds": 2 } });
    let proxy = Proxy::start(&a, &objects);

    for host in [&client, &other] {
        let attempts = Probe::tcp(web.vip_v4()).count(20).run(host);
        let counts = assert_replies_from(&proxy, &attempts, &endpoints, Some(host.ipv4()));
        assert_eq!(
            counts.len(),
            1,
            "20 connections from {} should stick to one endpoint: {counts:?}",
            host.name
        );
        println!("affinity: 20 connections from {}: {counts:?}", host.name);
    }
    let first = Probe::tcp(web.vip_v4()).once(&client);
    let sticky = first.server().expect("a reply").to_owned();
    // Each round waits out the timeout, so its connection is balanced afresh: the chance that
    // 8 rounds all pick the same endpoint again is (1/3)^8 ≈ 1.5e-4.
    let started = Instant::now();
    let mut moved = None;
    for round in 1..=8 {
        std::thread::sleep(Duration::from_millis(2300));
        let attempt = Probe::tcp(web.vip_v4()).once(&client);
        if attempt.server().is_some_and(|s| s != sticky) {
            moved = Some(round);
            break;
        }
    }
    let round = moved.unwrap_or_else(|| {
        panic!(
            "after the 2 s timeout, 8 new connections all still went to {sticky}\n{}",
            proxy.log()
        )
    });
    println!(
        "affinity: moved from {sticky} in round {round} of 2.3 s after the timeout ({:?})",
        started.elapsed()
    );
}

/// `loadBalancerSourceRanges`: the external host reaches the load-balancer IP while its
/// address is in the ranges, not once the ranges exclude it (dropped before DNAT: a timeout),
/// while the Service's NodePort keeps working from that same host.
#[test]
fn load_balancer_source_ranges_filter_the_load_balancer_ip_only() {
    let mut topo = Topology::new();
    let a = topo.node();
    let external = topo.external(&a);
    let web_pod = serving_pod(&mut topo, &a, "web-0", 20);
    let lb_ip: IpAddr = "192.0.2.200".parse().expect("address");
    let web = Service::cluster_ip("web", &["10.96.0.21"]).node_port(30084, Policy::Cluster);
    let objects = |range: &str| {
        let mut objects = web.objects(&ready([&web_pod]));
        objects[0]["spec"]["type"] = json!("LoadBalancer");
        objects[0]["spec"]["loadBalancerSourceRanges"] = json!([range]);
        objects[0]["status"] = json!({ "loadBalancer": { "ingress": [{ "ip": lb_ip.to_string() }] } });
        objects
    };
    // 203.0.113.0/25 holds the external host (203.0.113.2); 203.0.113.128/25 does not.
    let proxy = Proxy::start(&a, &objects("203.0.113.0/25"));
    let lb = SocketAddr::new(lb_ip, SERVICE_PORT);
    let node_port = SocketAddr::new(EXTERNAL_NODE_V4.into(), 30084);

    for probe in [Probe::tcp(lb), Probe::udp(lb)] {
        let attempts = probe.count(3).run(&external);
        assert_replies_from(&proxy, &attempts, [&web_pod], None);
    }
    proxy.update(&objects("203.0.113.128/25"));
    let took = eventually(
        &proxy,
        "the load-balancer IP drops a source outside the ranges",
        CONVERGE,
        || Probe::tcp(lb).timeout(Duration::from_millis(500)).once(&external),
        |a| a.outcome == Outcome::Timeout,
    );
    for probe in [Probe::tcp(lb), Probe::udp(lb)] {
        let attempts = probe.timeout(DROP_TIMEOUT).count(2).run(&external);
        for attempt in &attempts {
            assert_eq!(
                attempt.outcome,
                Outcome::Timeout,
                "{:?} to the LB IP from outside the ranges",
                probe.proto()
            );
        }
    }
    for probe in [Probe::tcp(node_port), Probe::udp(node_port)] {
        let attempts = probe.count(3).run(&external);
        assert_replies_from(&proxy, &attempts, [&web_pod], None);
    }
    println!(
        "source ranges: LB IP served inside the range, dropped outside {took:?} after the change; \
         the NodePort still served"
    );
}

/// Dual-stack: a Service with an IPv4 and an IPv6 cluster IP, reached over both families,
/// each time at the endpoints' address of that family, without masquerading.
#[test]
fn dual_stack_cluster_ip_serves_both_families() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10", "fd00:10:244:1::10"]);
    let endpoints: Vec<Pod> = (0..2)
        .map(|i| serving_pod(&mut topo, &a, &format!("web-{i}"), 20 + i))
        .collect();
    let web = Service::cluster_ip("web", &["10.96.0.15", "fd00:10:96::15"]);
    let proxy = Proxy::start(&a, &web.objects(&ready(&endpoints)));

    for (vip, source) in [(web.vip_v4(), client.ipv4()), (web.vip_v6(), client.ipv6())] {
        for probe in [Probe::tcp(vip), Probe::udp(vip)] {
            let attempts = probe.count(20).run(&client);
            let counts = assert_replies_from(&proxy, &attempts, &endpoints, Some(source));
            assert_eq!(
                counts.len(),
                2,
                "20 attempts should reach both endpoints: {counts:?}"
            );
            println!(
                "{:?} to {vip}: {counts:?}, slowest {:?}",
                probe.proto(),
                slowest(&attempts)
            );
        }
    }
}

/// Blue/green: the Service's selector moves from the blue Pods to the green ones (svcnet
/// derives the EndpointSlices from the Pods); within [`CONVERGE`] new connections go to green,
/// and from then on only to green.
#[test]
fn blue_green_switch_moves_new_connections() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let blue = vec![
        serving_pod(&mut topo, &a, "blue-0", 20),
        serving_pod(&mut topo, &a, "blue-1", 21),
    ];
    let green = vec![
        serving_pod(&mut topo, &a, "green-0", 30),
        serving_pod(&mut topo, &a, "green-1", 31),
    ];
    let objects = |version: &str| {
        let mut service = Service::cluster_ip("web", &["10.96.0.16"]).manifest();
        service["spec"]["selector"] = json!({ "app": "web", "version": version });
        let pods = blue.iter().map(|p| pod_manifest(p, "blue"));
        let pods = pods.chain(green.iter().map(|p| pod_manifest(p, "green")));
        std::iter::once(service).chain(pods).collect::<Vec<_>>()
    };
    let proxy = Proxy::start(&a, &objects("blue"));
    let vip = SocketAddr::new("10.96.0.16".parse().expect("address"), SERVICE_PORT);

    let attempts = Probe::tcp(vip).count(20).run(&client);
    assert_replies_from(&proxy, &attempts, &blue, Some(client.ipv4()));

    proxy.update(&objects("green"));
    let took = eventually(
        &proxy,
        "a connection reaches green",
        CONVERGE,
        || Probe::tcp(vip).timeout(Duration::from_millis(500)).once(&client),
        |a| a.server().is_some_and(|s| s.starts_with("green")),
    );
    let attempts = Probe::tcp(vip).count(20).run(&client);
    assert_replies_from(&proxy, &attempts, &green, Some(client.ipv4()));
    println!(
        "blue/green: first green connection {took:?} after the switch (bound {CONVERGE:?}), then 20 of 20 green"
    );
}

/// A transaction that fails leaves the old rules serving: `nft` on svcnet's PATH fails while
/// a marker file exists; a change made meanwhile cannot be applied, the old Service keeps its
/// old endpoint, svcnet keeps running, and once nft works again the change is applied.
#[test]
fn failed_transaction_keeps_the_old_rules() {
    let mut topo = Topology::new();
    let a = topo.node();
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let old = serving_pod(&mut topo, &a, "old", 20);
    let new = serving_pod(&mut topo, &a, "new", 21);
    let web = Service::cluster_ip("web", &["10.96.0.17"]);
    let added = Service::cluster_ip("added", &["10.96.0.18"]);

    let bin = tempfile::tempdir().expect("temporary directory");
    let marker = bin.path().join("fail");
    let fake = FailingNft::install(bin.path(), &marker);
    let mut proxy = Proxy::start_with(&a, &web.objects(&ready([&old])), |command| {
        command.env("PATH", fake.path_var());
    });
    let probe = Probe::tcp(web.vip_v4()).timeout(Duration::from_millis(500));
    assert_replies_from(&proxy, &probe.count(5).run(&client), [&old], None);

    std::fs::write(&marker, "").expect("create the marker");
    let mut objects = web.objects(&ready([&new]));
    objects.extend(added.objects(&ready([&new])));
    proxy.update(&objects);
    // svcnet must have tried (and failed) by now: a few syncs' worth of time.
    let tried = Instant::now();
    while fake.failures() == 0 && tried.elapsed() < CONVERGE {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fake.failures() > 0,
        "svcnet did not run nft within {CONVERGE:?} of a change:\n{}",
        proxy.log()
    );
    proxy.process.assert_running("svcnet after a failed nft");
    let attempts = probe.count(10).run(&client);
    assert_replies_from(&proxy, &attempts, [&old], None);
    let unapplied = Probe::tcp(added.vip_v4()).timeout(DROP_TIMEOUT).once(&client);
    assert_eq!(
        unapplied.outcome,
        Outcome::Timeout,
        "the Service added while nft failed should not be programmed yet"
    );
    println!(
        "nft failing ({} failed runs): the old rules still serve, the old endpoint got 10 of 10",
        fake.failures()
    );

    std::fs::remove_file(&marker).expect("remove the marker");
    // svcnet retries after 1 s, then backs off; 10 s covers the first retries on a busy machine.
    let took = eventually(
        &proxy,
        "the change is applied once nft works again",
        Duration::from_secs(10),
        || probe.once(&client),
        |a| a.server() == Some("new"),
    );
    assert_replies_from(&proxy, &probe.count(10).run(&client), [&new], None);
    let attempts = Probe::tcp(added.vip_v4()).count(3).run(&client);
    assert_replies_from(&proxy, &attempts, [&new], None);
    println!("the change was applied {took:?} after nft worked again (bound 10 s)");
}

/// Two nodes, svcnet on the first only: a Pod there reaches an endpoint on the other node
/// through a ClusterIP with its own address (Pod to Pod, no NAT); the external host reaches it
/// through a NodePort (externalTrafficPolicy Cluster) masqueraded to the node's address on the
/// link, so that the reply comes back through the first node.
#[test]
fn cluster_ip_and_node_port_reach_another_node() {
    let mut topo = Topology::new();
    let a = topo.node();
    let b = topo.node();
    topo.link(&a, &b);
    let external = topo.external(&a);
    let client = topo.pod(&a, "client", &["10.244.1.10"]);
    let remote = serving_pod(&mut topo, &b, "remote", 20);
    let web = Service::cluster_ip("web", &["10.96.0.19"]).node_port(30083, Policy::Cluster);
    let proxy = Proxy::start(&a, &web.objects(&ready([&remote])));

    for probe in [Probe::tcp(web.vip_v4()), Probe::udp(web.vip_v4())] {
        let attempts = probe.count(10).run(&client);
        assert_replies_from(&proxy, &attempts, [&remote], Some(client.ipv4()));
        println!(
            "cross-node cluster IP {:?}: {}",
            probe.proto(),
            summarize(&attempts)
        );
    }
    let target = SocketAddr::new(EXTERNAL_NODE_V4.into(), 30083);
    for probe in [Probe::tcp(target), Probe::udp(target)] {
        let attempts = probe.count(10).run(&external);
        assert_replies_from(&proxy, &attempts, [&remote], Some(LINK_V4[0].into()));
        println!(
            "cross-node NodePort {:?}: {}",
            probe.proto(),
            summarize(&attempts)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// svcnet, manifests and assertions.

/// `svcnet run --proxy apply` in a node's namespace, on a manifest directory of its own.
struct Proxy {
    process: Process,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn start(node: &Node, objects: &[Value]) -> Self {
        Self::start_with(node, objects, |_| {})
    }

    /// Starts svcnet (`configure` may change its command, e.g. its environment) and waits for
    /// its first rules: `table ip svcnet` in the node's namespace.
    fn start_with(node: &Node, objects: &[Value], configure: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        write_objects(dir.path(), "cluster.json", objects);
        let mut command = node.command(env!("CARGO_BIN_EXE_svcnet"));
        command
            .arg("run")
            .arg("--manifests")
            .arg(dir.path())
            .args(["--node-name", &node.name, "--proxy", "apply"])
            .args(["--cluster-cidr", CLUSTER_CIDRS])
            .args(["--nodeport-addresses", &format!("{EXTERNAL_NODE_V4}/32")])
            .env("RUST_LOG", "info,hickory_server=warn");
        configure(&mut command);
        let mut proxy = Self {
            process: Process::spawn(command),
            dir,
        };
        let started = Instant::now();
        loop {
            proxy.process.assert_running("svcnet");
            let listed = node
                .command("nft")
                .args(["list", "table", "ip", "svcnet"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run nft (install nftables)");
            if listed.success() {
                break;
            }
            assert!(
                started.elapsed() < FIRST_SYNC,
                "svcnet programmed no `table ip svcnet` in {} within {FIRST_SYNC:?}:\n{}",
                node.netns,
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "svcnet's first rules after {:?} (bound {FIRST_SYNC:?})",
            started.elapsed()
        );
        proxy
    }

    /// Replaces the cluster with `objects`, the way an editor saves a file: a new file renamed
    /// over the old one, so svcnet never reads half of it.
    fn update(&self, objects: &[Value]) {
        let staging = tempfile::tempdir().expect("temporary directory");
        write_objects(staging.path(), "cluster.json", objects);
        let file = staging.path().join("cluster.json");
        if std::fs::rename(&file, self.dir.path().join("cluster.json")).is_err() {
            // Another filesystem: write in place.
            write_objects(self.dir.path(), "cluster.json", objects);
        }
    }

    fn log(&self) -> String {
        self.process.log()
    }
}

/// A fake `nft` first on svcnet's PATH: fails while the marker exists, counting its failures,
/// and runs the real nft otherwise.
struct FailingNft {
    dir: PathBuf,
}

impl FailingNft {
    fn install(dir: &Path, marker: &Path) -> Self {
        let real = which("nft");
        let script = format!(
            "#!/bin/sh\n\
             if [ -e '{marker}' ]; then\n\
             \techo x >> '{count}'\n\
             \techo 'nft: made to fail by the test' >&2\n\
             \texit 1\n\
             fi\n\
             exec '{real}' \"$@\"\n",
            marker = marker.display(),
            count = dir.join("failures").display(),
            real = real.display(),
        );
        let path = dir.join("nft");
        std::fs::write(&path, script).expect("write the fake nft");
        let chmod = Command::new("chmod")
            .arg("755")
            .arg(&path)
            .status()
            .expect("chmod");
        assert!(chmod.success());
        Self { dir: dir.to_owned() }
    }

    /// PATH with the fake first.
    fn path_var(&self) -> String {
        let path = std::env::var("PATH").unwrap_or_default();
        format!("{}:{path}", self.dir.display())
    }

    fn failures(&self) -> usize {
        std::fs::read_to_string(self.dir.join("failures")).map_or(0, |s| s.lines().count())
    }
}

/// The full path of `program` on PATH.
fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

#[derive(Clone, Copy, Debug)]
enum Policy {
    Cluster,
    Local,
}

/// A Service in `default` with TCP and UDP port 80 to the endpoints' 8080, its endpoints
/// written as EndpointSlices by the test (no selector), one per family of its cluster IPs.
struct Service {
    name: &'static str,
    cluster_ips: Vec<IpAddr>,
    node_port: Option<(u16, Policy)>,
}

/// An endpoint of a Service: a Pod, ready or not.
struct Endpoint<'a> {
    pod: &'a Pod,
    ready: bool,
}

fn ready<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Endpoint<'a>> {
    pods.into_iter()
        .map(|pod| Endpoint { pod, ready: true })
        .collect()
}

impl Service {
    fn cluster_ip(name: &'static str, ips: &[&str]) -> Self {
        Self {
            name,
            cluster_ips: ips.iter().map(|ip| ip.parse().expect("cluster IP")).collect(),
            node_port: None,
        }
    }

    fn node_port(mut self, port: u16, policy: Policy) -> Self {
        self.node_port = Some((port, policy));
        self
    }

    fn vip_v4(&self) -> SocketAddr {
        self.vip(IpAddr::is_ipv4)
    }

    fn vip_v6(&self) -> SocketAddr {
        self.vip(IpAddr::is_ipv6)
    }

    fn vip(&self, family: fn(&IpAddr) -> bool) -> SocketAddr {
        let ip = self
            .cluster_ips
            .iter()
            .copied()
            .find(family)
            .expect("a cluster IP of the family");
        SocketAddr::new(ip, SERVICE_PORT)
    }

    fn manifest(&self) -> Value {
        let families: Vec<&str> = self.cluster_ips.iter().map(|ip| family_name(*ip)).collect();
        let mut ports = Vec::new();
        for protocol in ["TCP", "UDP"] {
            let mut port = json!({
                "name": protocol.to_lowercase(),
                "protocol": protocol,
                "port": SERVICE_PORT,
                "targetPort": SERVER_PORT,
            });
            if let Some((node_port, _)) = self.node_port {
                port["nodePort"] = json!(node_port);
            }
            ports.push(port);
        }
        let mut spec = json!({
            "type": "ClusterIP",
            "clusterIP": self.cluster_ips[0].to_string(),
            "clusterIPs": self.cluster_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ipFamilies": families,
            "ipFamilyPolicy": if families.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "ports": ports,
        });
        if let Some((_, policy)) = self.node_port {
            spec["type"] = json!("NodePort");
            spec["externalTrafficPolicy"] = json!(format!("{policy:?}"));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": self.name, "namespace": "default" },
            "spec": spec,
        })
    }

    /// The Service and its EndpointSlices.
    fn objects(&self, endpoints: &[Endpoint<'_>]) -> Vec<Value> {
        let mut objects = vec![self.manifest()];
        for family in self.cluster_ips.iter().map(|ip| family_name(*ip)) {
            let endpoints: Vec<Value> =
                endpoints
                    .iter()
                    .flat_map(|e| {
                        e.pod.ips.iter().filter(|ip| family_name(**ip) == family).map(|ip| {
                        json!({
                            "addresses": [ip.to_string()],
                            "conditions": { "ready": e.ready, "serving": e.ready, "terminating": false },
                            "nodeName": e.pod.node,
                            "targetRef": { "kind": "Pod", "namespace": "default", "name": e.pod.name },
                        })
                    })
                    })
                    .collect();
            objects.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-{}", self.name, family.to_lowercase()),
                    "namespace": "default",
                    "labels": { "kubernetes.io/service-name": self.name },
                },
                "addressType": family,
                "endpoints": endpoints,
                "ports": [
                    { "name": "tcp", "port": SERVER_PORT, "protocol": "TCP" },
                    { "name": "udp", "port": SERVER_PORT, "protocol": "UDP" },
                ],
            }));
        }
        objects
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// A ready Pod of the blue/green Deployments, on its node, labelled `app: web, version: V`.
fn pod_manifest(pod: &Pod, version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": "default",
            "labels": { "app": "web", "version": version },
        },
        "spec": {
            "nodeName": pod.node,
            "containers": [{ "name": "web", "image": "web", "ports": [{ "containerPort": SERVER_PORT }] }],
        },
        "status": {
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }],
            "podIP": pod.ips[0].to_string(),
            "podIPs": pod.ips.iter().map(|ip| json!({ "ip": ip.to_string() })).collect::<Vec<_>>(),
        },
    })
}

/// A dual-stack Pod on `node` (node N's Pods are 10.244.N.HOST and fd00:10:244:N::HOST) with a
/// server on [`SERVER_PORT`].
fn serving_pod(topo: &mut Topology, node: &Node, name: &str, host: u8) -> Pod {
    let n = node.address.octets()[3];
    let pod = topo.pod(
        node,
        name,
        &[
            &format!("10.244.{n}.{host}"),
            &format!("fd00:10:244:{n}::{host:x}"),
        ],
    );
    topo.serve(&pod, SERVER_PORT);
    pod
}

fn reply(server: &Pod, peer: IpAddr) -> Outcome {
    Outcome::Reply {
        server: server.name.clone(),
        peer,
    }
}

/// Asserts that every attempt got a reply from one of `servers` (and, if given, that they saw
/// `peer` as the source); returns how many each server answered.
fn assert_replies_from<'a>(
    proxy: &Proxy,
    attempts: &[Attempt],
    servers: impl IntoIterator<Item = &'a Pod>,
    peer: Option<IpAddr>,
) -> BTreeMap<String, usize> {
    let servers: Vec<&Pod> = servers.into_iter().collect();
    let mut counts = BTreeMap::new();
    for attempt in attempts {
        let ok = match &attempt.outcome {
            Outcome::Reply { server, peer: seen } => {
                servers.iter().any(|s| s.name == *server) && peer.is_none_or(|p| p == *seen)
            }
            _ => false,
        };
        if !ok {
            let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
            panic!(
                "want replies from {names:?}{}; got: {}\nsvcnet's log:\n{}",
                peer.map(|p| format!(" seeing {p}")).unwrap_or_default(),
                summarize(attempts),
                proxy.log()
            );
        }
        if let Some(server) = attempt.server() {
            *counts.entry(server.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Repeats `attempt` until `done`, for at most `bound`; returns how long it took.
fn eventually(
    proxy: &Proxy,
    what: &str,
    bound: Duration,
    mut attempt: impl FnMut() -> Attempt,
    done: impl Fn(&Attempt) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut last = Vec::new();
    // Every attempt has its own timeout, so this is bounded in time and count.
    while start.elapsed() < bound && last.len() < 1000 {
        let a = attempt();
        if done(&a) {
            return start.elapsed();
        }
        last.push(a);
    }
    panic!(
        "{what}: not within {bound:?}; attempts: {}\nsvcnet's log:\n{}",
        summarize(&last),
        proxy.log()
    );
}

fn slowest(attempts: &[Attempt]) -> Duration {
    attempts.iter().map(|a| a.elapsed).max().unwrap_or_default()
}

/// Runs an nft script in `host`'s namespace.
fn nft(host: &impl Host, script: &str) {
    use std::io::Write as _;
    let mut child = host
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (install nftables)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to nft");
    let output = child.wait_with_output().expect("wait for nft");
    assert!(
        output.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

//! Which flows a sync leaves stale (pure), and their deletion by the real `conntrack` in a
//! network namespace of its own (needs root).

use std::collections::BTreeSet;

use svcnet_cluster::model::Protocol::{self, *};
use svcnet_proxy::{
    ConntrackCommand, Desired,
    conntrack::{Cleanup, StaleFlows, stale_flows},
    desired,
    desired::EntryPoint,
};

use crate::common::*;

/// `ns/dns` on 10.96.0.10 and fd00:96::10, UDP 53 and TCP 53, to `endpoints` on 5353.
fn dns(endpoints: &[&str]) -> Desired {
    let svc = service(
        "ns/dns",
        &["10.96.0.10", "fd00:96::10"],
        vec![port(Some("udp"), Udp, 53), port(Some("tcp"), Tcp, 53)],
    );
    let slices = vec![slice(
        "ns/dns-1",
        "dns",
        &[(Some("udp"), Udp, 5353), (Some("tcp"), Tcp, 5353)],
        endpoints
            .iter()
            .map(|a| endpoint(a, Some("node-b"), State::Ready))
            .collect(),
    )];
    desired(&snapshot(vec![svc], slices), &node(&[], &[]))
}

fn entry(addr: &str, protocol: Protocol, port: u16) -> EntryPoint {
    EntryPoint {
        addr: ip(addr),
        protocol,
        port,
    }
}

fn lines(flows: &BTreeSet<StaleFlows>) -> Vec<String> {
    flows.iter().map(ToString::to_string).collect()
}

#[test]
fn a_removed_endpoint_leaves_its_udp_flows_stale_not_its_tcp_ones() {
    let before = dns(&["10.244.1.1", "10.244.1.2", "fd00:244::1"]);
    let after = dns(&["10.244.1.2", "10.244.1.3", "fd00:244::1"]);
    assert_eq!(
        lines(&stale_flows(&before, &after)),
        [
            "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.1 --reply-port-src 5353"
        ]
    );
    // Added endpoints, or nothing changed: nothing stale.
    assert!(stale_flows(&after, &after).is_empty());
}

#[test]
fn an_entry_point_that_stops_or_starts_serving_loses_all_its_udp_flows() {
    let serving = dns(&["10.244.1.1", "fd00:244::1"]);
    let empty = dns(&[]);
    let whole = [
        "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53",
        "-D -f ipv6 -p udp --orig-dst fd00:96::10 --orig-port-dst 53",
    ];
    // No endpoint left (the Service now rejects): every flow to it, not one per endpoint.
    assert_eq!(lines(&stale_flows(&serving, &empty)), whole);
    // Endpoints again: flows that were refused or never DNATed must start over.
    assert_eq!(lines(&stale_flows(&empty, &serving)), whole);
    // The Service deleted.
    assert_eq!(lines(&stale_flows(&serving, &Desired::default())), whole);
    let flows = stale_flows(&serving, &empty);
    assert!(flows.iter().all(|f| f.entry.protocol == Udp), "{flows:?}");
    assert!(flows.contains(&StaleFlows {
        entry: entry("10.96.0.10", Udp, 53),
        endpoint: None
    }));
}

/// Runs `conntrack ARGS` in `netns`, failing the test unless it succeeds.
fn conntrack(netns: &Netns, args: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &netns.name, "conntrack"])
        .args(args.split_whitespace())
        .output()
        .expect("run conntrack (install conntrack-tools)");
    assert!(
        out.status.success(),
        "conntrack {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UDP flow from a client to `vip:53` DNATed to `endpoint:5353`, as the kernel would track it.
fn flow(netns: &Netns, client: &str, sport: u16, vip: &str, endpoint: &str) {
    conntrack(
        netns,
        &format!(
            "-I -p udp -s {client} -d {vip} --sport {sport} --dport 53 -r {endpoint} -q {client} \
             --reply-port-src 5353 --reply-port-dst {sport} -t 120"
        ),
    );
}

#[tokio::test]
async fn the_cleanup_deletes_exactly_the_stale_flows_in_one_run() {
    let netns = Netns::new();
    flow(&netns, "10.244.9.9", 1000, "10.96.0.10", "10.244.1.1");
    flow(&netns, "10.244.9.9", 1001, "10.96.0.10", "10.244.1.2");
    flow(&netns, "fd00:244::9", 1002, "fd00:96::10", "fd00:244::1");
    flow(&netns, "10.244.9.9", 1003, "10.96.0.99", "10.244.1.1");

    let before = dns(&["10.244.1.1", "10.244.1.2", "fd00:244::1"]);
    let after = dns(&["10.244.1.2"]);
    let stale = stale_flows(&before, &after);
    let mut cleanup = Cleanup::new(ConntrackCommand::in_netns(&netns.name));
    let started = std::time::Instant::now();
    cleanup.run(&stale).await;
    let took = started.elapsed();
    assert_eq!(cleanup.failures(), 0);

    let left = conntrack(&netns, "-L -f ipv4 -p udp") + &conntrack(&netns, "-L -f ipv6 -p udp");
    let sports: BTreeSet<&str> = left
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("sport="))
        .filter(|port| *port != "5353") // the reply direction's
        .collect();
    // 1000 (to the removed 10.244.1.1) and 1002 (the IPv6 entry point, now without
    // endpoints) are gone; 1001 (a kept endpoint) and 1003 (another Service) stay.
    assert_eq!(sports, BTreeSet::from(["1001", "1003"]), "{left}");
    println!("conntrack cleanup of {} targets: {took:?}", stale.len());

    // Targets that match nothing are not failures; a conntrack that cannot run is one.
    cleanup.run(&stale).await;
    assert_eq!(cleanup.failures(), 0);
    let mut broken = Cleanup::new(ConntrackCommand {
        program: "/nonexistent/conntrack".into(),
        args_prefix: vec![],
    });
    broken.run(&stale).await;
    assert_eq!(broken.failures(), 1);
}

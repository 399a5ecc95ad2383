//! Every kind of text the renderer produces, checked by nft itself (`nft -c`, which also has
//! the kernel validate it) and loaded, each in a fresh network namespace. Needs root.

use std::collections::BTreeSet;

use svcnet_cluster::model::{Protocol, Service, ServiceType, TrafficPolicy};
use svcnet_proxy::{Desired, NodeContext, desired, diff::diff, nft::Family, ruleset};

use crate::common::*;

/// The sets and maps of both tables, each as the sorted list of its elements as nft lists
/// them: the contents, whatever order the kernel's hash tables keep.
pub fn contents(netns: &Netns) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for family in Family::ALL {
        for (kind, name) in [
            ("set", "cluster-cidrs"),
            ("map", "service-ips"),
            ("map", "no-endpoints"),
            ("map", "endpoints-tcp"),
            ("map", "endpoints-udp"),
            ("map", "endpoints-sctp"),
            ("set", "hairpin"),
        ] {
            let text = netns.list(&[kind, family.keyword(), "svcnet", name]);
            out.push((format!("{} {name}", family.keyword()), elements(&text)));
        }
    }
    out
}

/// The elements of one listed set or map.
fn elements(listing: &str) -> BTreeSet<String> {
    let Some((_, rest)) = listing.split_once("elements = {") else {
        return BTreeSet::new();
    };
    let (inside, _) = rest.split_once('}').expect("closing brace");
    inside
        .split(',')
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty())
        .collect()
}

/// Loads `desired` whole into a fresh namespace and returns what its tables hold.
pub async fn reference(desired: &Desired) -> Vec<(String, BTreeSet<String>)> {
    let netns = Netns::new();
    netns
        .nft()
        .apply(&ruleset::full(desired))
        .await
        .expect("load the reference");
    contents(&netns)
}

#[tokio::test]
async fn the_full_ruleset_of_every_variant_is_accepted_and_loads() {
    let (snap, node) = rich();
    let netns = Netns::new();
    for node in [
        node.clone(),
        // Without cluster CIDRs the off-cluster chains have no masquerade rule.
        NodeContext {
            cluster_cidrs: vec![],
            ..node
        },
    ] {
        let tx = ruleset::full(&desired(&snap, &node));
        netns.check_and_apply(&tx).await;
    }
    let listing = netns.list(&["ruleset"]);
    for expected in [
        "table ip svcnet",
        "table ip6 svcnet",
        "chain lb-tcp-3-masq",
        "chain lb-sctp-1-local",
        "dnat ip to ip daddr . meta l4proto . udp dport . numgen random mod 2 map @endpoints-udp",
        "goto reject-chain",
        "10.96.0.110 . udp . 11211 comment \"shop/cache\" : drop",
        "fd00:96::80 . udp . 53 . 0 : fd00:244::10 . 5353",
        "192.168.1.10 . tcp . 30080 . 2 : 10.244.3.21 . 9090",
        "198.51.100.7 . sctp . 9000",
        "type nat hook output priority -100",
    ] {
        assert!(listing.contains(expected), "no {expected:?} in\n{listing}");
    }
    // Loaded a second time, the full replace left one table per family, not two copies.
    assert_eq!(listing.matches("table ip svcnet").count(), 1, "{listing}");
    assert_eq!(listing.matches("chain nat-prerouting").count(), 2, "{listing}");
    assert!(!listing.contains("saddr != @cluster-cidrs"), "{listing}");
}

/// The rich cluster after a round of changes: endpoints added, moved and gone, a Service
/// deleted, one added, a policy flipped.
fn changed() -> Desired {
    use Protocol::*;
    let (snap, node) = rich();
    let mut services: Vec<Service> = snap.services().map(|e| (*e.service).clone()).collect();
    let mut slices: Vec<_> = snap
        .services()
        .flat_map(|e| e.slices.iter().map(|s| (**s).clone()))
        .collect();
    services.retain(|s| &*s.key.name != "empty");
    for svc in &mut services {
        if &*svc.key.name == "front" {
            svc.external_traffic_policy = TrafficPolicy::Cluster;
        }
    }
    services.push(Service {
        service_type: ServiceType::NodePort,
        ..service(
            "shop/new",
            &["10.96.0.130", "fd00:96::130"],
            vec![node_port(None, Udp, 500, 30500)],
        )
    });
    slices.retain(|s| &*s.key.name != "api-1");
    slices.push(slice(
        "shop/api-2",
        "api",
        &[(None, Tcp, 9090)],
        (1..=5)
            .map(|n| endpoint(&format!("10.244.4.{n}"), Some("node-d"), State::Ready))
            .collect(),
    ));
    slices.push(slice(
        "shop/new-1",
        "new",
        &[(None, Udp, 4500)],
        vec![
            endpoint("10.244.1.60", Some(NODE), State::Ready),
            endpoint("fd00:244::60", Some(NODE), State::Ready),
        ],
    ));
    desired(&snapshot(services, slices), &node)
}

#[tokio::test]
async fn an_incremental_transaction_on_a_loaded_table_gives_the_new_contents() {
    let (snap, node) = rich();
    let before = desired(&snap, &node);
    let after = changed();
    let tx = diff(&before, &after).expect("same cluster CIDRs");
    assert!(tx.render().contains("add chain ip svcnet lb-tcp-5"), "{tx}");

    let netns = Netns::new();
    netns.nft().apply(&ruleset::full(&before)).await.unwrap();
    netns.check_and_apply(&tx).await;
    assert_eq!(contents(&netns), reference(&after).await);

    // And back again, onto the chains the first diff left.
    let applied = after.keeping_chains_of(&before);
    let back = diff(&applied, &before).unwrap();
    netns.apply(&back).await;
    assert_eq!(contents(&netns), reference(&before).await);
}

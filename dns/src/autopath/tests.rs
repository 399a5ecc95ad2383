//! Which queries are completed, for which clients, through which names.

use svcnet_cluster::{ClusterState, model::ObjectKey};

use super::*;

const NODE: &str = "n1";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn pod(ns: &str, pod_name: &str, ip: &str) -> Pod {
    Pod {
        key: ObjectKey::new(ns, pod_name),
        ips: vec![ip.parse().unwrap()],
        node_name: Some(NODE.to_owned()),
        host_network: false,
        terminating: false,
        cluster_first_search: true,
    }
}

fn snapshot(pods: Vec<Pod>) -> Snapshot {
    let mut state = ClusterState::default();
    for pod in pods {
        state.pods.apply(pod.key.clone(), pod);
    }
    state.snapshot(true)
}

fn autopath(node_searches: &[&str]) -> Autopath {
    Autopath::new(
        name("cluster.local."),
        node_searches.iter().map(|s| name(s)).collect(),
        NODE.to_owned(),
    )
}

fn candidates(autopath: &Autopath, snap: &Snapshot, client: &str, qname: &str) -> Option<Vec<String>> {
    autopath
        .candidates(snap, client.parse().unwrap(), &name(qname))
        .map(|names| names.iter().map(ToString::to_string).collect())
}

#[test]
fn a_pods_query_under_its_first_search_domain_walks_its_search_list() {
    let snap = snapshot(vec![pod("shop", "client", "10.244.1.5")]);
    let autopath = autopath(&["corp.example.", "cluster.local."]);
    assert_eq!(
        candidates(
            &autopath,
            &snap,
            "10.244.1.5",
            "api.example.org.shop.svc.cluster.local."
        ),
        Some(vec![
            "api.example.org.shop.svc.cluster.local.".to_owned(),
            "api.example.org.svc.cluster.local.".to_owned(),
            "api.example.org.cluster.local.".to_owned(),
            // The node's search domains follow, without the one already listed.
            "api.example.org.corp.example.".to_owned(),
            "api.example.org.".to_owned(),
        ])
    );
}

#[test]
fn the_asked_spelling_is_kept() {
    let snap = snapshot(vec![pod("shop", "client", "10.244.1.5")]);
    let names = candidates(&autopath(&[]), &snap, "10.244.1.5", "Web.SHOP.svc.Cluster.Local.").unwrap();
    assert_eq!(names[0], "Web.SHOP.svc.Cluster.Local.");
    assert_eq!(names[3], "Web.");
}

#[test]
fn other_names_and_other_namespaces_are_not_completed() {
    let snap = snapshot(vec![pod("shop", "client", "10.244.1.5")]);
    let autopath = autopath(&[]);
    for qname in [
        // Under a later search domain: the client is walking by itself.
        "api.example.org.svc.cluster.local.",
        "api.example.org.cluster.local.",
        // Another namespace's first search domain.
        "api.example.org.web.svc.cluster.local.",
        // The search domain itself: no base name.
        "shop.svc.cluster.local.",
        "api.example.org.",
    ] {
        assert_eq!(candidates(&autopath, &snap, "10.244.1.5", qname), None, "{qname}");
    }
}

#[test]
fn only_one_known_pod_of_this_node_with_kubelets_search_list_is_a_client() {
    let q = "api.example.org.shop.svc.cluster.local.";
    let autopath = autopath(&[]);
    // Not a Pod at all.
    assert_eq!(candidates(&autopath, &snapshot(vec![]), "10.244.1.5", q), None);

    let mut elsewhere = pod("shop", "client", "10.244.1.5");
    elsewhere.node_name = Some("n2".to_owned());
    let mut host = pod("shop", "client", "10.244.1.5");
    host.host_network = true;
    let mut custom = pod("shop", "client", "10.244.1.5");
    custom.cluster_first_search = false;
    for pod in [elsewhere, host, custom] {
        assert_eq!(
            candidates(&autopath, &snapshot(vec![pod.clone()]), "10.244.1.5", q),
            None,
            "{pod:?}"
        );
    }

    // An address two Pods claim (coredns#2842): no answer is better than the wrong namespace.
    let shared = snapshot(vec![
        pod("shop", "client", "10.244.1.5"),
        pod("web", "other", "10.244.1.5"),
    ]);
    assert_eq!(candidates(&autopath, &shared, "10.244.1.5", q), None);

    // ...unless the other one is on its way out.
    let mut leaving = pod("web", "other", "10.244.1.5");
    leaving.terminating = true;
    let reused = snapshot(vec![pod("shop", "client", "10.244.1.5"), leaving]);
    assert!(candidates(&autopath, &reused, "10.244.1.5", q).is_some());
}

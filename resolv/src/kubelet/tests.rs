//! Expectations written from the kubelet's documented rules (kubernetes.io "DNS for Services
//! and Pods", "Pod's DNS Policy" and "Pod's DNS Config") and `pkg/kubelet/network/dns`.

use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": spec,
    }))
    .expect("a valid Pod")
}

fn cluster() -> ClusterDns {
    ClusterDns {
        servers: vec!["10.96.0.10".into()],
        domain: "cluster.local".into(),
    }
}

fn node() -> ResolvConf {
    ResolvConf::parse(
        "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions timeout:2\n",
    )
}

fn conf_of(spec: serde_json::Value) -> ResolvConf {
    pod_resolv_conf(&pod(spec), &cluster(), &node())
        .expect("valid policy")
        .conf
}

#[test]
fn cluster_first_is_the_default() {
    let conf = conf_of(json!({"containers": []}));
    assert_eq!(conf.nameservers, ["10.96.0.10"]);
    // The cluster's three domains, then the node's own; the node's options do not carry over.
    assert_eq!(
        conf.searches,
        [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example"
        ]
    );
    assert_eq!(conf.options, ["ndots:5"]);
}

#[test]
fn host_network_with_cluster_first_behaves_as_default() {
    assert_eq!(
        conf_of(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirst"})),
        node()
    );
}

#[test]
fn cluster_first_with_host_net_uses_cluster_dns() {
    let conf = conf_of(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}));
    assert_eq!(conf.nameservers, ["10.96.0.10"]);
    assert_eq!(conf.searches[0], "shop.svc.cluster.local");
}

#[test]
fn default_copies_the_node() {
    assert_eq!(conf_of(json!({"dnsPolicy": "Default"})), node());
}

#[test]
fn none_takes_everything_from_dns_config() {
    let conf = conf_of(json!({"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["198.51.100.1"], "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
    // The example of the Kubernetes documentation, "Pod's DNS Config".
    assert_eq!(
        conf.to_string(),
        "search ns1.svc.cluster-domain.example my.dns.search.suffix\nnameserver 198.51.100.1\noptions ndots:2 edns0\n"
    );
}

#[test]
fn none_without_nameservers_is_invalid() {
    let err = pod_resolv_conf(&pod(json!({"dnsPolicy": "None"})), &cluster(), &node()).unwrap_err();
    assert_eq!(err, PolicyError::NoneWithoutNameservers);
}

#[test]
fn dns_config_merges_into_the_policy() {
    let conf = conf_of(json!({"dnsConfig": {
        "nameservers": ["10.96.0.10", "198.51.100.1"],
        "searches": ["extra.example", "svc.cluster.local"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "single-request-reopen"}]}}));
    // Duplicates merge; the Pod's ndots overrides kubelet's.
    assert_eq!(conf.nameservers, ["10.96.0.10", "198.51.100.1"]);
    assert_eq!(
        conf.searches,
        [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example",
            "extra.example"
        ]
    );
    assert_eq!(conf.options, ["ndots:2", "single-request-reopen"]);
}

#[test]
fn nameservers_are_cut_to_three() {
    let result = pod_resolv_conf(
        &pod(json!({"dnsPolicy": "Default", "dnsConfig": {"nameservers": ["198.51.100.1", "198.51.100.2"]}})),
        &cluster(),
        &node(),
    )
    .expect("valid");
    assert_eq!(
        result.conf.nameservers,
        ["192.0.2.53", "192.0.2.54", "198.51.100.1"]
    );
    assert_eq!(result.warnings.len(), 1);
}

#[test]
fn search_list_is_cut_to_32_domains_and_2048_characters() {
    let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let conf = conf_of(
        json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["198.51.100.1"], "searches": many}}),
    );
    assert_eq!(conf.searches.len(), 32);
    assert_eq!(conf.searches[31], "d31.example");

    // 20 domains of 120 characters: 20*121-1 = 2419 characters; cutting from the end until the
    // line fits leaves 16 (16*121-1 = 1935).
    let long: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "x".repeat(118))).collect();
    let conf = conf_of(
        json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["198.51.100.1"], "searches": long}}),
    );
    assert_eq!(conf.searches.len(), 16);
    assert!(conf.searches.join(" ").len() <= MAX_SEARCH_CHARS);
}

#[test]
fn cluster_first_without_cluster_dns_falls_back_to_default() {
    let none = ClusterDns {
        servers: vec![],
        domain: "cluster.local".into(),
    };
    let result = pod_resolv_conf(&pod(json!({})), &none, &node()).expect("valid");
    assert_eq!(result.conf, node());
    assert!(!result.warnings.is_empty());
}

#[test]
fn unknown_policy_is_an_error() {
    let err = pod_resolv_conf(&pod(json!({"dnsPolicy": "Sometimes"})), &cluster(), &node()).unwrap_err();
    assert_eq!(err, PolicyError::Unknown("Sometimes".into()));
}

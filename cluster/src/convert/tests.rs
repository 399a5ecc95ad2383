//! Objects are written as the API server sends them (JSON), and expectations follow the
//! Kubernetes API reference for each field.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

fn from_json<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("test object matches its schema")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal IP")
}

/// A Service in `default/web` with the given `spec`.
fn service_with(spec: Value) -> core::Service {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": "web"},
        "spec": spec,
    }))
}

fn convert_service(spec: Value) -> Service {
    service(&service_with(spec)).expect("valid Service")
}

/// The field an `InvalidField` error names.
fn invalid_field(error: ConvertError) -> String {
    match error {
        ConvertError::InvalidField { field, .. } => field,
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

fn service_error_field(spec: Value) -> String {
    invalid_field(service(&service_with(spec)).expect_err("invalid Service"))
}

// ---- Service addressing ----

#[test]
fn cluster_ip_comes_from_cluster_ips() {
    let svc = convert_service(json!({
        "type": "ClusterIP",
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "ports": [{"port": 53, "protocol": "UDP"}],
    }));
    assert_eq!(svc.key, ObjectKey::new("default", "web"));
    assert_eq!(svc.service_type, ServiceType::ClusterIp);
    assert_eq!(
        svc.addressing,
        ServiceAddressing::ClusterIp(vec![ip("10.96.0.10")])
    );
}

#[test]
fn cluster_ip_alone_is_used_when_cluster_ips_is_absent() {
    // Objects written before dual-stack (and some tools) carry only `clusterIP`.
    let svc = convert_service(json!({"clusterIP": "10.96.0.11"}));
    assert_eq!(
        svc.service_type,
        ServiceType::ClusterIp,
        "type defaults to ClusterIP"
    );
    assert_eq!(
        svc.addressing,
        ServiceAddressing::ClusterIp(vec![ip("10.96.0.11")])
    );
}

#[test]
fn dual_stack_keeps_both_families_in_order() {
    let svc = convert_service(json!({
        "clusterIP": "fd00:10:96::a",
        "clusterIPs": ["fd00:10:96::a", "10.96.0.10"],
        "ipFamilies": ["IPv6", "IPv4"],
        "ipFamilyPolicy": "PreferDualStack",
    }));
    assert_eq!(
        svc.addressing,
        ServiceAddressing::ClusterIp(vec![ip("fd00:10:96::a"), ip("10.96.0.10")])
    );
}

#[test]
fn cluster_ip_none_is_headless() {
    let svc = convert_service(json!({
        "clusterIP": "None",
        "clusterIPs": ["None"],
        "ports": [{"port": 80}],
    }));
    assert_eq!(svc.addressing, ServiceAddressing::Headless);
}

#[test]
fn invalid_cluster_ip_names_its_index() {
    let field = service_error_field(json!({
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10", "fd00::zz"],
    }));
    assert_eq!(field, "spec.clusterIPs[1]");
}

#[test]
fn external_name_is_lowercased_without_trailing_dot() {
    let svc = convert_service(json!({"type": "ExternalName", "externalName": "DB.Example.COM."}));
    assert_eq!(svc.service_type, ServiceType::ExternalName);
    assert_eq!(
        svc.addressing,
        ServiceAddressing::ExternalName("db.example.com".into())
    );
}

#[test]
fn external_name_without_a_name_is_an_error() {
    assert_eq!(
        service_error_field(json!({"type": "ExternalName"})),
        "spec.externalName"
    );
    assert_eq!(
        service_error_field(json!({"type": "ExternalName", "externalName": "."})),
        "spec.externalName"
    );
}

#[test]
fn unknown_type_names_the_field() {
    let error =
        service(&service_with(json!({"type": "Magic", "clusterIP": "10.96.0.1"}))).expect_err("unknown type");
    // The message carries the object and the field, for the log line.
    assert_eq!(
        error.to_string(),
        "Service default/web: spec.type: `Magic` is not ClusterIP, NodePort, LoadBalancer or ExternalName"
    );
}

#[test]
fn service_without_namespace_is_an_error() {
    let svc: core::Service = from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.0.1"},
    }));
    assert_eq!(
        service(&svc),
        Err(ConvertError::MissingMeta {
            kind: "Service",
            field: "namespace"
        })
    );
}

#[test]
fn service_without_spec_is_an_error() {
    let svc: core::Service = from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": "web"},
    }));
    assert_eq!(invalid_field(service(&svc).expect_err("no spec")), "spec");
}

// ---- Service ports ----

#[test]
fn port_protocol_defaults_to_tcp() {
    let svc = convert_service(json!({
        "clusterIP": "10.96.0.1",
        "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
    }));
    assert_eq!(svc.ports[0].protocol, Protocol::Tcp);
    assert_eq!(svc.ports[0].name.as_deref(), Some("http"));
    assert_eq!(svc.ports[1].protocol, Protocol::Udp);
}

#[test]
fn target_port_as_number_string_or_name() {
    let svc = convert_service(json!({
        "type": "NodePort",
        "clusterIP": "10.96.0.1",
        "ports": [
            {"name": "a", "port": 80, "targetPort": 8080, "nodePort": 30080},
            {"name": "b", "port": 81, "targetPort": "8081"},
            {"name": "c", "port": 82, "targetPort": "http-alt"},
            // Without targetPort the API uses `port` (an identity map).
            {"name": "d", "port": 83},
        ],
    }));
    let targets: Vec<_> = svc.ports.iter().map(|p| p.target_port.clone()).collect();
    assert_eq!(
        targets,
        [
            TargetPort::Number(8080),
            TargetPort::Number(8081),
            TargetPort::Name("http-alt".into()),
            TargetPort::Number(83),
        ]
    );
    assert_eq!(svc.service_type, ServiceType::NodePort);
    assert_eq!(svc.ports[0].node_port, Some(30080));
    assert_eq!(svc.ports[1].node_port, None);
}

#[test]
fn out_of_range_ports_name_the_field() {
    let port = |p: Value| service_error_field(json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}, p]}));
    assert_eq!(port(json!({"port": 0})), "spec.ports[1].port");
    assert_eq!(
        port(json!({"port": 80, "targetPort": 70000})),
        "spec.ports[1].targetPort"
    );
    assert_eq!(
        port(json!({"port": 80, "nodePort": -1})),
        "spec.ports[1].nodePort"
    );
    assert_eq!(
        port(json!({"port": 80, "protocol": "ICMP"})),
        "spec.ports[1].protocol"
    );
}

// ---- Service policies and load balancers ----

#[test]
fn client_ip_affinity_defaults_to_three_hours() {
    let svc = convert_service(json!({"clusterIP": "10.96.0.1", "sessionAffinity": "ClientIP"}));
    assert_eq!(svc.session_affinity, Some(Duration::from_secs(10_800)));

    let svc = convert_service(json!({
        "clusterIP": "10.96.0.1",
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
    }));
    assert_eq!(svc.session_affinity, Some(Duration::from_secs(60)));

    let svc = convert_service(json!({"clusterIP": "10.96.0.1", "sessionAffinity": "None"}));
    assert_eq!(svc.session_affinity, None);
}

#[test]
fn traffic_policies() {
    let svc = convert_service(json!({"clusterIP": "10.96.0.1"}));
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Cluster);

    let svc = convert_service(json!({
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.1",
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Local",
        "healthCheckNodePort": 32000,
    }));
    assert_eq!(svc.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(svc.health_check_node_port, Some(32000));
}

#[test]
fn load_balancer_ingress_ips_skip_hostname_only_entries() {
    let mut svc = service_with(json!({
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.1",
        "externalIPs": ["192.0.2.10"],
        "loadBalancerSourceRanges": ["198.51.100.0/24"],
    }));
    svc.status = Some(from_json(json!({
        "loadBalancer": {"ingress": [
            {"ip": "203.0.113.7"},
            {"hostname": "lb.example.com"},
            {"ip": "2001:db8::7", "ipMode": "VIP"},
        ]},
    })));
    let svc = service(&svc).expect("valid Service");
    assert_eq!(svc.service_type, ServiceType::LoadBalancer);
    assert_eq!(svc.load_balancer_ips, [ip("203.0.113.7"), ip("2001:db8::7")]);
    assert_eq!(svc.external_ips, [ip("192.0.2.10")]);
    assert_eq!(
        svc.load_balancer_source_ranges,
        ["198.51.100.0/24".parse::<ipnet::IpNet>().expect("literal CIDR")]
    );
}

#[test]
fn invalid_load_balancer_ingress_ip_names_its_index() {
    let mut svc = service_with(json!({"type": "LoadBalancer", "clusterIP": "10.96.0.1"}));
    svc.status = Some(from_json(json!({
        "loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "not-an-ip"}]},
    })));
    assert_eq!(
        invalid_field(service(&svc).expect_err("bad ingress IP")),
        "status.loadBalancer.ingress[1].ip"
    );
}

// ---- EndpointSlice ----

fn slice_from(labels: Value, body: Value) -> discovery::EndpointSlice {
    let mut object = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": "web-abc12", "labels": labels},
    });
    if let (Some(object), Some(body)) = (object.as_object_mut(), body.as_object()) {
        object.extend(body.clone());
    }
    from_json(object)
}

fn web_slice(body: Value) -> discovery::EndpointSlice {
    slice_from(json!({"kubernetes.io/service-name": "web"}), body)
}

fn convert_slice(body: Value) -> EndpointSlice {
    endpoint_slice(&web_slice(body))
        .expect("valid EndpointSlice")
        .expect("served EndpointSlice")
}

#[test]
fn slice_without_service_name_label_is_not_served() {
    let slice = slice_from(
        json!({"endpointslice.kubernetes.io/managed-by": "someone"}),
        json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}]}),
    );
    assert_eq!(endpoint_slice(&slice), Ok(None));
}

#[test]
fn fqdn_slice_is_not_served() {
    let slice = web_slice(json!({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]}));
    assert_eq!(endpoint_slice(&slice), Ok(None));
}

#[test]
fn endpoint_conditions_default_to_ready_and_serving() {
    let slice = convert_slice(json!({
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
    assert_eq!(slice.key, ObjectKey::new("default", "web-abc12"));
    assert_eq!(&*slice.service_name, "web");
    let ep = &slice.endpoints[0];
    assert_eq!(ep.addresses, [ip("10.1.0.5")]);
    // "A nil value should be interpreted as true" (ready, serving); terminating as false.
    assert!(ep.ready);
    assert!(ep.serving);
    assert!(!ep.terminating);
}

#[test]
fn unset_serving_follows_ready() {
    // Deliberately not the API reference's "nil means true" for `serving`: writers that
    // predate the field (and hand-written slices) say everything through `ready`, and an
    // endpoint they mark not ready must not count as serving.
    let slice = convert_slice(json!({
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.5"], "conditions": {"ready": false}},
            {"addresses": ["10.1.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        ],
    }));
    let [not_ready, terminating] = &slice.endpoints[..] else {
        panic!("two endpoints expected");
    };
    assert!(!not_ready.ready && !not_ready.serving && !not_ready.terminating);
    assert!(!terminating.ready && terminating.serving && terminating.terminating);
}

#[test]
fn endpoint_identity_fields() {
    let slice = convert_slice(json!({
        "addressType": "IPv6",
        "endpoints": [
            {
                "addresses": ["fd00:1::5"],
                "hostname": "Web-0",
                "nodeName": "node-1",
                "zone": "zone-a",
                "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0", "uid": "1234"},
            },
            {"addresses": ["fd00:1::6"], "targetRef": {"kind": "Node", "name": "node-2"}},
        ],
    }));
    let ep = &slice.endpoints[0];
    assert_eq!(ep.addresses, [ip("fd00:1::5")]);
    assert_eq!(ep.hostname.as_deref(), Some("web-0"));
    assert_eq!(ep.node_name.as_deref(), Some("node-1"));
    assert_eq!(ep.zone.as_deref(), Some("zone-a"));
    assert_eq!(ep.pod_name.as_deref(), Some("web-0"));
    // Only a Pod target names a Pod.
    assert_eq!(slice.endpoints[1].pod_name, None);
    assert_eq!(slice.endpoints[1].hostname, None);
}

#[test]
fn slice_without_ports() {
    let slice = convert_slice(json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.5"]}]}));
    assert!(slice.ports.is_empty());
    assert_eq!(slice.endpoints.len(), 1);
}

#[test]
fn slice_port_fields() {
    // A port without a number means "all ports"; protocol defaults to TCP.
    let slice = convert_slice(json!({
        "addressType": "IPv4",
        "endpoints": [],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": ""}],
    }));
    assert_eq!(
        slice.ports,
        [
            EndpointPort {
                name: Some("dns".into()),
                protocol: Protocol::Udp,
                port: Some(53),
            },
            EndpointPort {
                name: None,
                protocol: Protocol::Tcp,
                port: None,
            },
        ]
    );
}

#[test]
fn invalid_endpoint_address_names_its_position() {
    let slice = web_slice(json!({
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"]}, {"addresses": ["10.1.0.6", "10.1.0.300"]}],
    }));
    assert_eq!(
        invalid_field(endpoint_slice(&slice).expect_err("bad address")),
        "endpoints[1].addresses[1]"
    );
}

// ---- Pod ----

fn pod_with(metadata: Value, status: Value) -> core::Pod {
    let mut meta = json!({"namespace": "default", "name": "web-0"});
    if let (Some(meta), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        meta.extend(extra.clone());
    }
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app"}]},
        "status": status,
    }))
}

#[test]
fn pod_ips_merge_pod_ip_and_pod_ips() {
    let dual = pod(&pod_with(
        json!({}),
        json!({"podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00:1::5"}]}),
    ))
    .expect("valid Pod");
    assert_eq!(dual.ips, [ip("10.1.0.5"), ip("fd00:1::5")]);
    assert_eq!(dual.node_name.as_deref(), Some("node-1"));
    assert!(!dual.host_network);
    assert!(!dual.terminating);

    let only_pod_ip = pod(&pod_with(json!({}), json!({"podIP": "10.1.0.7"}))).expect("valid Pod");
    assert_eq!(only_pod_ip.ips, [ip("10.1.0.7")]);

    let pending = pod(&pod_with(json!({}), json!({"phase": "Pending"}))).expect("valid Pod");
    assert!(pending.ips.is_empty());
}

#[test]
fn pod_with_deletion_timestamp_is_terminating() {
    let pod = pod(&pod_with(
        json!({"deletionTimestamp": "2025-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}),
        json!({"podIP": "10.1.0.5"}),
    ))
    .expect("valid Pod");
    assert!(pod.terminating);
}

#[test]
fn only_plain_cluster_first_pods_search_kubelets_cluster_list() {
    let with_spec = |spec: Value| {
        let mut pod = pod_with(json!({}), json!({"podIP": "10.1.0.5"}));
        let spec: core::PodSpec = from_json(spec);
        pod.spec = Some(core::PodSpec {
            node_name: Some("node-1".into()),
            ..spec
        });
        super::pod(&pod).expect("valid Pod").cluster_first_search
    };
    let containers = json!([{"name": "app", "image": "app"}]);
    assert!(with_spec(json!({"containers": containers})));
    assert!(with_spec(
        json!({"containers": containers, "dnsPolicy": "ClusterFirst"})
    ));
    assert!(with_spec(
        json!({"containers": containers, "dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": true})
    ));
    // Extra options (ndots) keep the list; only the list matters to completion.
    assert!(with_spec(
        json!({"containers": containers, "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]}})
    ));
    assert!(!with_spec(json!({"containers": containers, "hostNetwork": true})));
    assert!(!with_spec(
        json!({"containers": containers, "dnsPolicy": "Default"})
    ));
    assert!(!with_spec(
        json!({"containers": containers, "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}})
    ));
    assert!(!with_spec(
        json!({"containers": containers, "dnsConfig": {"searches": ["corp.example"]}})
    ));
}

#[test]
fn invalid_pod_ip_names_the_field() {
    let pod = pod(&pod_with(
        json!({}),
        json!({"podIPs": [{"ip": "10.1.0.5"}, {"ip": "bogus"}]}),
    ));
    assert_eq!(invalid_field(pod.expect_err("bad IP")), "status.podIPs[1]");
}

// ---- Namespace ----

#[test]
fn namespace_keeps_its_labels() {
    let ns: core::Namespace = from_json(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "prod", "labels": {"kubernetes.io/metadata.name": "prod", "team": "a"}},
    }));
    let ns = namespace(&ns).expect("valid Namespace");
    assert_eq!(&*ns.name, "prod");
    assert_eq!(ns.labels.get("team").map(String::as_str), Some("a"));
}

fn annotated_slice(trigger: &str) -> EndpointSlice {
    let mut slice = web_slice(json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]}));
    slice.metadata.annotations = Some(
        [(LAST_CHANGE_TRIGGER_TIME_ANNOTATION.to_owned(), trigger.to_owned())]
            .into_iter()
            .collect(),
    );
    endpoint_slice(&slice)
        .expect("valid EndpointSlice")
        .expect("served EndpointSlice")
}

#[test]
fn last_change_trigger_time_is_parsed() {
    let epoch = std::time::SystemTime::UNIX_EPOCH;
    // As the EndpointSlice controller writes it (Go's RFC3339Nano), and with an offset.
    let slice = annotated_slice("2024-05-06T07:08:09.123456789Z");
    assert_eq!(
        slice.last_change_trigger_time,
        Some(epoch + Duration::new(1_714_979_289, 123_456_789))
    );
    let slice = annotated_slice("2024-05-06T09:08:09+02:00");
    assert_eq!(
        slice.last_change_trigger_time,
        Some(epoch + Duration::from_secs(1_714_979_289))
    );
    // Unset, or unusable: the slice is still served, without a trigger time.
    assert_eq!(
        convert_slice(json!({"addressType": "IPv4"})).last_change_trigger_time,
        None
    );
    for bad in ["", "yesterday", "2024-05-06 07:08:09", "1960-01-01T00:00:00Z"] {
        assert_eq!(annotated_slice(bad).last_change_trigger_time, None, "{bad}");
    }
}

#[test]
fn slices_differing_only_in_trigger_time_are_equal() {
    let a = annotated_slice("2024-05-06T07:08:09Z");
    let b = annotated_slice("2024-05-06T07:08:10Z");
    assert_ne!(a.last_change_trigger_time, b.last_change_trigger_time);
    assert_eq!(a, b);
}

//! The derivation against the EndpointSlice controller's rules. Expected values are written from
//! those rules (see the module documentation), not from this code's output.

use std::collections::BTreeMap;

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};

use super::endpoint_slices;

fn service(yaml: &str) -> core::Service {
    serde_saphyr::from_str(yaml).expect("test Service")
}

fn pods(yaml: &str) -> Vec<core::Pod> {
    serde_saphyr::from_multiple(yaml).expect("test Pods")
}

/// `web` in `shop`, selecting `app: web`, one port named `http` to container port 8080.
const WEB: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
";

/// A running, ready Pod `name` of `app: web` in `shop` with the given IPs.
fn ready_pod(name: &str, ips: &[&str]) -> String {
    let ips: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
    format!(
        "
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, uid: uid-{name}, labels: {{app: web, tier: front}}}}
spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}
status:
  phase: Running
  podIPs: [{}]
  conditions: [{{type: Ready, status: 'True'}}]
",
        ips.join(", ")
    )
}

fn derive(service_yaml: &str, pods_yaml: &str) -> Vec<discovery::EndpointSlice> {
    endpoint_slices(&service(service_yaml), &pods(pods_yaml))
}

fn only(slices: &[discovery::EndpointSlice]) -> &discovery::EndpointSlice {
    assert_eq!(slices.len(), 1, "{slices:#?}");
    &slices[0]
}

fn conditions(endpoint: &discovery::Endpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
    let c = endpoint.conditions.clone().unwrap_or_default();
    (c.ready, c.serving, c.terminating)
}

fn pod_names(slice: &discovery::EndpointSlice) -> Vec<&str> {
    slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref()?.name.as_deref())
        .collect()
}

fn port(name: &str, number: i32, protocol: &str) -> discovery::EndpointPort {
    discovery::EndpointPort {
        name: Some(name.to_owned()),
        port: Some(number),
        protocol: Some(protocol.to_owned()),
        app_protocol: None,
    }
}

#[test]
fn one_ready_pod_makes_one_ipv4_slice() {
    let slices = derive(WEB, &ready_pod("web-a", &["10.0.0.1"]));
    let slice = only(&slices);

    assert_eq!(slice.metadata.name.as_deref(), Some("web-ipv4"));
    assert_eq!(slice.metadata.namespace.as_deref(), Some("shop"));
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels,
        BTreeMap::from([
            ("kubernetes.io/service-name".to_owned(), "web".to_owned()),
            (
                "endpointslice.kubernetes.io/managed-by".to_owned(),
                "svcnet-manifests".to_owned()
            ),
        ])
    );
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.ports, Some(vec![port("http", 8080, "TCP")]));

    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.addresses, ["10.0.0.1"]);
    assert_eq!(conditions(endpoint), (Some(true), Some(true), Some(false)));
    assert_eq!(endpoint.node_name.as_deref(), Some("node-1"));
    assert_eq!(endpoint.hostname, None);
    let target = endpoint.target_ref.clone().unwrap_or_default();
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.namespace.as_deref(), Some("shop"));
    assert_eq!(target.name.as_deref(), Some("web-a"));
    assert_eq!(target.uid.as_deref(), Some("uid-web-a"));
}

#[test]
fn selector_must_match_every_label_in_the_same_namespace() {
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: other-app, namespace: shop, labels: {app: db}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other-namespace, namespace: elsewhere, labels: {app: web}}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: no-labels, namespace: shop}
status: {podIP: 10.0.0.4}
---
apiVersion: v1
kind: Pod
metadata: {name: partial, namespace: shop, labels: {app: web}}
status: {podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: all, namespace: shop, labels: {app: web, tier: back, extra: x}}
status: {podIP: 10.0.0.6}
";
    let svc = WEB.replace("{app: web}", "{app: web, tier: back}");
    let slices = derive(&svc, pods);
    assert_eq!(pod_names(only(&slices)), ["all"]);
}

#[test]
fn readiness_comes_from_the_ready_condition() {
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: not-ready, namespace: shop, labels: {app: web}}
status:
  podIP: 10.0.0.1
  conditions: [{type: Ready, status: 'False'}, {type: ContainersReady, status: 'True'}]
---
apiVersion: v1
kind: Pod
metadata: {name: no-conditions, namespace: shop, labels: {app: web}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: ready, namespace: shop, labels: {app: web}}
status:
  podIP: 10.0.0.3
  conditions: [{type: Ready, status: 'True'}]
";
    let slices = derive(WEB, pods);
    let slice = only(&slices);
    assert_eq!(pod_names(slice), ["not-ready", "no-conditions", "ready"]);
    let not_ready = (Some(false), Some(false), Some(false));
    assert_eq!(conditions(&slice.endpoints[0]), not_ready);
    assert_eq!(conditions(&slice.endpoints[1]), not_ready);
    assert_eq!(
        conditions(&slice.endpoints[2]),
        (Some(true), Some(true), Some(false))
    );
}

#[test]
fn terminating_pod_is_serving_but_not_ready() {
    let pod = ready_pod("web-a", &["10.0.0.1"]).replace(
        "uid: uid-web-a,",
        "uid: uid-web-a, deletionTimestamp: '2025-01-01T00:00:00Z',",
    );
    let slices = derive(WEB, &pod);
    let endpoint = &only(&slices).endpoints[0];
    assert_eq!(conditions(endpoint), (Some(false), Some(true), Some(true)));
}

#[test]
fn publish_not_ready_addresses_forces_ready_only() {
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: not-ready, namespace: shop, labels: {app: web}}
status:
  podIP: 10.0.0.1
  conditions: [{type: Ready, status: 'False'}]
---
apiVersion: v1
kind: Pod
metadata: {name: terminating, namespace: shop, labels: {app: web}, deletionTimestamp: '2025-01-01T00:00:00Z'}
status:
  podIP: 10.0.0.2
  conditions: [{type: Ready, status: 'True'}]
";
    let svc = WEB.replace("spec:\n", "spec:\n  publishNotReadyAddresses: true\n");
    let slices = derive(&svc, pods);
    let slice = only(&slices);
    // `ready` is forced; `serving` still reports the Pod's Ready condition.
    assert_eq!(
        conditions(&slice.endpoints[0]),
        (Some(true), Some(false), Some(false))
    );
    assert_eq!(
        conditions(&slice.endpoints[1]),
        (Some(true), Some(true), Some(true))
    );
}

#[test]
fn hostname_only_when_subdomain_is_the_service() {
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {hostname: web-0, subdomain: web, containers: []}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {hostname: web-1, subdomain: other, containers: []}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {hostname: web-2, containers: []}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: shop, labels: {app: web}}
spec: {subdomain: web, containers: []}
status: {podIP: 10.0.0.4}
";
    let slices = derive(WEB, pods);
    let hostnames: Vec<Option<&str>> = only(&slices)
        .endpoints
        .iter()
        .map(|e| e.hostname.as_deref())
        .collect();
    assert_eq!(hostnames, [Some("web-0"), None, None, None]);
}

#[test]
fn named_target_port_is_resolved_per_pod_and_groups_slices() {
    let svc = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
";
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: main
    image: i
    ports:
    - {name: dns, containerPort: 53, protocol: TCP}
    - {name: http, containerPort: 8080}
  - name: sidecar
    image: i
    ports: [{name: dns, containerPort: 5353, protocol: UDP}]
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: main
    image: i
    ports: [{name: http, containerPort: 9090}, {name: dns, containerPort: 5353, protocol: UDP}]
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop, labels: {app: web}}
spec:
  containers:
  - {name: main, image: i, ports: [{name: http, containerPort: 8080}]}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: shop, labels: {app: web}}
spec:
  containers:
  - {name: main, image: i, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]}
status: {podIP: 10.0.0.4}
";
    let slices = derive(svc, pods);
    type Summary<'a> = (&'a str, Option<Vec<discovery::EndpointPort>>, Vec<&'a str>);
    let summary: Vec<Summary<'_>> = slices
        .iter()
        .map(|s| {
            (
                s.metadata.name.as_deref().unwrap_or(""),
                s.ports.clone(),
                pod_names(s),
            )
        })
        .collect();
    // `dns` is looked up by name and protocol: pod a's TCP `dns` does not count, its sidecar's
    // UDP one does. Pod c has no `dns` port at all, so that port is dropped for it alone.
    assert_eq!(
        summary,
        [
            (
                "web-ipv4",
                Some(vec![port("http", 8080, "TCP"), port("dns", 5353, "UDP")]),
                vec!["a", "d"]
            ),
            (
                "web-ipv4-1",
                Some(vec![port("http", 9090, "TCP"), port("dns", 5353, "UDP")]),
                vec!["b"]
            ),
            ("web-ipv4-2", Some(vec![port("http", 8080, "TCP")]), vec!["c"]),
        ]
    );
}

#[test]
fn numeric_and_missing_target_ports() {
    let svc = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {port: 80}
  - {name: metrics, port: 9100, targetPort: 9101, protocol: TCP, appProtocol: http}
";
    let slices = derive(svc, &ready_pod("a", &["10.0.0.1"]));
    let mut metrics = port("metrics", 9101, "TCP");
    metrics.app_protocol = Some("http".to_owned());
    // An unnamed port keeps its (empty) name; a missing targetPort means the port itself.
    assert_eq!(only(&slices).ports, Some(vec![port("", 80, "TCP"), metrics]));
}

#[test]
fn dual_stack_pods_make_one_slice_per_family() {
    let pods = format!(
        "{}---{}",
        ready_pod("a", &["10.0.0.1", "fd00::1"]),
        ready_pod("b", &["fd00::2"])
    );
    let slices = derive(WEB, &pods);
    let summary: Vec<(&str, &str, Vec<Vec<String>>)> = slices
        .iter()
        .map(|s| {
            let addresses = s.endpoints.iter().map(|e| e.addresses.clone()).collect();
            (
                s.metadata.name.as_deref().unwrap_or(""),
                s.address_type.as_str(),
                addresses,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("web-ipv4", "IPv4", vec![vec!["10.0.0.1".to_owned()]]),
            (
                "web-ipv6",
                "IPv6",
                vec![vec!["fd00::1".to_owned()], vec!["fd00::2".to_owned()]]
            ),
        ]
    );
}

#[test]
fn service_families_limit_the_slices() {
    let pods = ready_pod("a", &["10.0.0.1", "fd00::1"]);
    let families =
        |svc: &str| -> Vec<String> { derive(svc, &pods).into_iter().map(|s| s.address_type).collect() };
    let v6_only = WEB.replace("spec:\n", "spec:\n  ipFamilies: [IPv6]\n");
    assert_eq!(families(&v6_only), ["IPv6"]);
    // Without ipFamilies, the API server would have set them from the cluster IPs.
    let v4_cluster_ip = WEB.replace("spec:\n", "spec:\n  clusterIP: 10.96.0.10\n");
    assert_eq!(families(&v4_cluster_ip), ["IPv4"]);
    let dual_cluster_ips = WEB.replace("spec:\n", "spec:\n  clusterIPs: [fd00:96::10, 10.96.0.10]\n");
    assert_eq!(families(&dual_cluster_ips), ["IPv4", "IPv6"]);
    // Headless and without families: both, as the controller assumes.
    let headless = WEB.replace("spec:\n", "spec:\n  clusterIP: None\n");
    assert_eq!(families(&headless), ["IPv4", "IPv6"]);
}

#[test]
fn pods_without_ip_or_finished_are_left_out() {
    let pods = "
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: shop, labels: {app: web}}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: no-status, namespace: shop, labels: {app: web}}
---
apiVersion: v1
kind: Pod
metadata: {name: succeeded, namespace: shop, labels: {app: web}}
status: {phase: Succeeded, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: failed, namespace: shop, labels: {app: web}}
status: {phase: Failed, podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: running, namespace: shop, labels: {app: web}}
status: {phase: Running, podIP: 10.0.0.3}
";
    let slices = derive(WEB, pods);
    assert_eq!(pod_names(only(&slices)), ["running"]);
}

#[test]
fn no_selector_or_external_name_gets_no_slices() {
    let pods = ready_pod("a", &["10.0.0.1"]);
    let no_selector = WEB.replace("  selector: {app: web}\n", "");
    assert!(derive(&no_selector, &pods).is_empty());
    let empty_selector = WEB.replace("{app: web}", "{}");
    assert!(derive(&empty_selector, &pods).is_empty());
    let external = WEB.replace(
        "spec:\n",
        "spec:\n  type: ExternalName\n  externalName: example.com\n",
    );
    assert!(derive(&external, &pods).is_empty());
}

#[test]
fn no_matching_pods_no_slices() {
    assert!(derive(WEB, "").is_empty());
}

use std::{collections::BTreeMap, net::IpAddr};

use svcnet_cluster::{
    ClusterState,
    model::{Endpoint, ObjectKey, ServiceType, TrafficPolicy},
};

use super::*;

fn service(name: &str, addressing: ServiceAddressing, selector: bool) -> Service {
    Service {
        key: ObjectKey::new("default", name),
        service_type: match addressing {
            ServiceAddressing::ExternalName(_) => ServiceType::ExternalName,
            _ => ServiceType::ClusterIp,
        },
        addressing,
        ports: vec![],
        selector: selector.then(|| BTreeMap::from([("app".to_owned(), name.to_owned())])),
        publish_not_ready_addresses: false,
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: None,
        health_check_node_port: None,
    }
}

fn cluster_ip() -> ServiceAddressing {
    ServiceAddressing::ClusterIp(vec!["10.96.0.10".parse().unwrap()])
}

fn slice(service: &str, address: &str, ready: bool, trigger: Option<SystemTime>) -> EndpointSlice {
    EndpointSlice {
        key: ObjectKey::new("default", format!("{service}-abcde")),
        service_name: service.into(),
        ports: vec![],
        endpoints: vec![Endpoint {
            addresses: vec![address.parse::<IpAddr>().unwrap()],
            hostname: None,
            ready,
            serving: ready,
            terminating: false,
            node_name: None,
            zone: None,
            pod_name: None,
        }],
        last_change_trigger_time: trigger,
    }
}

fn apply_slice(state: &mut ClusterState, slice: EndpointSlice) -> bool {
    let changed = state.slices.apply(slice.key.clone(), slice);
    state.touch(changed)
}

#[test]
fn kind_follows_addressing_and_selector() {
    assert_eq!(
        service_kind(&service("a", cluster_ip(), true)),
        Some("cluster_ip")
    );
    assert_eq!(
        service_kind(&service("a", cluster_ip(), false)),
        Some("cluster_ip")
    );
    assert_eq!(
        service_kind(&service("a", ServiceAddressing::Headless, true)),
        Some("headless_with_selector")
    );
    assert_eq!(
        service_kind(&service("a", ServiceAddressing::Headless, false)),
        Some("headless_without_selector")
    );
    assert_eq!(
        service_kind(&service(
            "a",
            ServiceAddressing::ExternalName("example.org".into()),
            false
        )),
        None
    );
}

#[test]
fn new_and_changed_slices_are_observed_by_kind() {
    let started = SystemTime::now();
    let metrics = ProgrammingLatency::started_at(started);
    let trigger = started + Duration::from_secs(1);
    let now = started + Duration::from_secs(3);

    let mut state = ClusterState::default();
    for svc in [
        service("web", cluster_ip(), true),
        service("db", ServiceAddressing::Headless, true),
        service("manual", ServiceAddressing::Headless, false),
        service(
            "ext",
            ServiceAddressing::ExternalName("example.org".into()),
            false,
        ),
    ] {
        state.services.apply(svc.key.clone(), svc);
    }
    let empty = state.snapshot(true);
    for (svc, address) in [
        ("web", "10.0.0.1"),
        ("db", "10.0.0.2"),
        ("manual", "10.0.0.3"),
        ("ext", "10.0.0.4"),
    ] {
        apply_slice(&mut state, slice(svc, address, false, Some(trigger)));
    }
    let first = state.snapshot(true);
    metrics.observe_changes(&empty, &first, now);
    assert_eq!(metrics.count("cluster_ip"), 1);
    assert_eq!(metrics.count("headless_with_selector"), 1);
    assert_eq!(metrics.count("headless_without_selector"), 1);

    // Nothing changed: nothing observed.
    let same = state.snapshot(true);
    metrics.observe_changes(&first, &same, now);
    assert_eq!(metrics.count("cluster_ip"), 1);

    // Only the annotation changed: the same version for DNS, no new serial, not observed.
    let serial = state.serial();
    let later = Some(trigger + Duration::from_secs(1));
    assert!(!apply_slice(&mut state, slice("web", "10.0.0.1", false, later)));
    assert_eq!(state.serial(), serial);
    let annotated = state.snapshot(true);
    metrics.observe_changes(&same, &annotated, now);
    assert_eq!(metrics.count("cluster_ip"), 1);

    // The endpoint turned ready: observed, at now - trigger = 1 s.
    assert!(apply_slice(&mut state, slice("web", "10.0.0.1", true, later)));
    let ready = state.snapshot(true);
    metrics.observe_changes(&annotated, &ready, now);
    assert_eq!(metrics.count("cluster_ip"), 2);
    assert_eq!(metrics.count("headless_with_selector"), 1);
}

#[test]
fn changes_from_before_start_or_without_trigger_time_are_not_observed() {
    let started = SystemTime::now();
    let metrics = ProgrammingLatency::started_at(started);
    let mut state = ClusterState::default();
    let svc = service("web", cluster_ip(), true);
    state.services.apply(svc.key.clone(), svc);
    let empty = state.snapshot(true);

    apply_slice(
        &mut state,
        slice("web", "10.0.0.1", true, Some(started - Duration::from_secs(60))),
    );
    let old = state.snapshot(true);
    metrics.observe_changes(&empty, &old, started);
    apply_slice(&mut state, slice("web", "10.0.0.2", true, None));
    let unannotated = state.snapshot(true);
    metrics.observe_changes(&old, &unannotated, started);
    assert_eq!(metrics.count("cluster_ip"), 0);

    // A trigger time ahead of the local clock counts as zero rather than being dropped.
    apply_slice(
        &mut state,
        slice("web", "10.0.0.3", true, Some(started + Duration::from_secs(5))),
    );
    let skewed = state.snapshot(true);
    metrics.observe_changes(&unannotated, &skewed, started);
    assert_eq!(metrics.count("cluster_ip"), 1);
}

#[tokio::test]
async fn watch_observes_published_snapshots() {
    let metrics = ProgrammingLatency::default();
    let (publisher, reader) = svcnet_cluster::channel();
    let task = tokio::spawn(metrics.clone().watch(reader));
    let mut state = ClusterState::default();
    let svc = service("db", ServiceAddressing::Headless, true);
    state.services.apply(svc.key.clone(), svc);
    apply_slice(&mut state, slice("db", "10.0.0.2", true, Some(SystemTime::now())));
    publisher.publish(state.snapshot(true));
    for _ in 0..100 {
        if metrics.count("headless_with_selector") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.count("headless_with_selector"), 1);
    drop(publisher);
    task.await.unwrap();
}

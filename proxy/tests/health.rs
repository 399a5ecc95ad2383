//! The proxy's operator surface without root: which healthCheckNodePort servers a snapshot
//! asks for, those servers and `/healthz` over HTTP on 127.0.0.1, and the metrics a sync
//! records, scraped and parsed.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use svcnet_cluster::model::{ObjectKey, Protocol, Service, ServiceType, TrafficPolicy};
use svcnet_proxy::{
    Backend, NftCommand, Proxy, ProxyHealth, ProxyMetrics, ServiceHealthServers, SyncPeriods, health,
    service_health::{ServiceHealthTarget, targets},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A LoadBalancer Service with `externalTrafficPolicy: Local` and health check port `hc`.
fn local_lb(name: &str, cluster_ip: &str, hc: u16) -> Service {
    Service {
        service_type: ServiceType::LoadBalancer,
        external_traffic_policy: TrafficPolicy::Local,
        health_check_node_port: Some(hc),
        ..service(
            name,
            &[cluster_ip],
            vec![
                node_port(Some("http"), Protocol::Tcp, 80, 30080),
                node_port(Some("https"), Protocol::Tcp, 443, 30443),
            ],
        )
    }
}

fn target(name: &str, local_endpoints: usize) -> ServiceHealthTarget {
    let (namespace, name) = name.split_once('/').unwrap();
    ServiceHealthTarget {
        service: ObjectKey::new(namespace, name),
        local_endpoints,
    }
}

#[test]
fn health_check_ports_count_local_ready_endpoints_by_address() {
    let http_https = [
        (Some("http"), Protocol::Tcp, 8080),
        (Some("https"), Protocol::Tcp, 8443),
    ];
    let services = vec![
        local_lb("shop/front", "10.96.0.1", 32001),
        local_lb("shop/draining", "10.96.0.2", 32002),
        local_lb("shop/elsewhere", "10.96.0.3", 32003),
        // Not served: Cluster policy, not a LoadBalancer, headless.
        Service {
            external_traffic_policy: TrafficPolicy::Cluster,
            ..local_lb("shop/cluster", "10.96.0.4", 32004)
        },
        Service {
            service_type: ServiceType::NodePort,
            ..local_lb("shop/nodeport", "10.96.0.5", 32005)
        },
        Service {
            addressing: svcnet_cluster::model::ServiceAddressing::Headless,
            ..local_lb("shop/headless", "10.96.0.6", 32006)
        },
        // Claims front's port; front sorts first and keeps it.
        local_lb("zoo/dup", "10.96.0.7", 32001),
    ];
    let slices = vec![
        slice(
            "shop/front-1",
            "front",
            &http_https,
            vec![
                endpoint("10.244.1.1", Some(NODE), State::Ready),
                endpoint("10.244.1.2", Some(NODE), State::Ready),
                endpoint("10.244.1.3", Some(NODE), State::Unready),
                endpoint("10.244.1.4", Some(NODE), State::Draining),
                endpoint("10.244.2.1", Some("node-b"), State::Ready),
            ],
        ),
        // The same Pod in a second slice (slices being rebalanced) counts once.
        slice(
            "shop/front-2",
            "front",
            &http_https,
            vec![endpoint("10.244.1.1", Some(NODE), State::Ready)],
        ),
        // A slice without a port of the Service is not used by the proxy.
        slice(
            "shop/front-3",
            "front",
            &[(Some("metrics"), Protocol::Tcp, 9090)],
            vec![endpoint("10.244.1.9", Some(NODE), State::Ready)],
        ),
        // Only draining endpoints here: the load balancer should move away (kube-proxy).
        slice(
            "shop/draining-1",
            "draining",
            &http_https,
            vec![endpoint("10.244.1.5", Some(NODE), State::Draining)],
        ),
        slice(
            "shop/elsewhere-1",
            "elsewhere",
            &http_https,
            vec![endpoint("10.244.2.5", Some("node-b"), State::Ready)],
        ),
    ];
    let snapshot = snapshot(services, slices);
    assert_eq!(
        targets(&snapshot, &node(&[], &[])),
        BTreeMap::from([
            (32001, target("shop/front", 2)),
            (32002, target("shop/draining", 0)),
            (32003, target("shop/elsewhere", 0)),
        ])
    );
}

/// `GET /path` over a fresh connection: status, headers (lowercased names) and body; `None`
/// when the connection is refused.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, BTreeMap<String, String>, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: svcnet\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Some((status, headers, body.to_owned()))
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn health_check_servers_follow_the_counts_and_come_and_go() {
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
    let mut servers =
        ServiceHealthServers::new(vec![ip("127.0.0.1")], health.clone(), Duration::from_millis(20));
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    servers.reconcile(BTreeMap::from([(port, target("shop/front", 2))]));
    eventually("listening", || async { get(addr, "/").await.is_some() }).await;

    let (status, headers, body) = get(addr, "/any/path").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(headers["x-load-balancing-endpoint-weight"], "2");
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "service": {"namespace": "shop", "name": "front"},
            "localEndpoints": 2,
            "serviceProxyHealthy": true,
        })
    );

    servers.reconcile(BTreeMap::from([(port, target("shop/front", 0))]));
    let (status, headers, _) = get(addr, "/").await.unwrap();
    assert_eq!(status, 503, "no local endpoint");
    assert_eq!(headers["x-load-balancing-endpoint-weight"], "0");

    servers.reconcile(BTreeMap::new());
    assert_eq!(servers.ports().count(), 0);
    eventually("closed", || async { get(addr, "/").await.is_none() }).await;
}

#[tokio::test]
async fn a_taken_health_check_port_is_bound_once_it_is_free() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blocker.local_addr().unwrap();
    let mut servers = ServiceHealthServers::new(vec![addr.ip()], Arc::default(), Duration::from_millis(20));
    servers.reconcile(BTreeMap::from([(addr.port(), target("shop/front", 1))]));
    assert_eq!(
        servers.ports().collect::<Vec<_>>(),
        [addr.port()],
        "kept, to retry"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(blocker);
    eventually("bound after the retry", || async {
        get(addr, "/").await.is_some_and(|(status, _, _)| status == 200)
    })
    .await;
}

/// The samples of a text exposition: `name{labels}` to value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn scrape(registry: &Registry) -> BTreeMap<String, f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    parse_exposition(&text)
}

#[tokio::test]
async fn a_sync_records_kube_proxys_metrics_and_healthz_answers() {
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("runs");
    // A stand-in for nft that succeeds and counts its runs.
    let nft = NftCommand {
        program: "sh".into(),
        args_prefix: vec![
            "-c".into(),
            format!("cat >/dev/null; echo >> {}", count.display()),
            "fake-nft".into(),
        ],
    };
    let periods = SyncPeriods {
        min: Duration::from_millis(10),
        full: Duration::from_secs(3600),
    };
    let (publisher, reader) = svcnet_cluster::channel();
    let proxy = Proxy::new(node(&[], &[]), Backend::Apply(nft), periods)
        .with_metrics(metrics.clone())
        .with_health(health.clone());
    let task = tokio::spawn(proxy.run(reader));

    publisher.publish(web(&["10.244.1.1", "10.244.1.2"]));
    let runs = || std::fs::read_to_string(&count).map_or(0, |s| s.lines().count());
    eventually("first sync", || async { runs() == 1 }).await;
    publisher.publish(web(&["10.244.1.3"]));
    eventually("second sync", || async {
        scrape(&registry).get("svcnet_proxy_transactions_total{kind=\"partial\"}") == Some(&1.0)
    })
    .await;

    let samples = scrape(&registry);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series}: {samples:#?}"))
    };
    assert_eq!(value("svcnet_proxy_transactions_total{kind=\"full\"}"), 1.0);
    // Every sync is timed, also one that found nothing to change (the first snapshot can wake
    // the loop twice).
    let syncs = value("kubeproxy_sync_proxy_rules_duration_seconds_count");
    assert!(syncs >= 2.0, "{syncs}");
    assert_eq!(
        value("kubeproxy_sync_full_proxy_rules_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count"),
        syncs - 1.0
    );
    assert!(samples.contains_key("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"}"));
    assert!(samples.contains_key("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"}"));
    // The first sync programs the state found at start, not a change.
    assert_eq!(value("kubeproxy_network_programming_duration_seconds_count"), 1.0);
    assert!(samples.contains_key("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"}"));
    assert!(samples.contains_key("kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\"}"));
    assert_eq!(
        value("kubeproxy_sync_proxy_rules_nftables_sync_failures_total"),
        0.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value("kubeproxy_sync_proxy_rules_last_timestamp_seconds");
    assert!((now - last).abs() < 60.0, "{last} vs {now}");
    let queued = value("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds");
    assert!(queued <= last && (now - queued).abs() < 60.0, "{queued}");
    assert_eq!(
        value("svcnet_proxy_map_elements{map=\"endpoints-tcp\",ip_family=\"IPv4\"}"),
        1.0
    );
    assert_eq!(
        value("svcnet_proxy_map_elements{map=\"service-ips\",ip_family=\"IPv4\"}"),
        1.0
    );
    assert_eq!(
        value("svcnet_proxy_map_elements{map=\"service-ips\",ip_family=\"IPv6\"}"),
        0.0
    );

    // /healthz and /livez over HTTP, counted by code.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, health::router(health, metrics))
            .await
            .unwrap();
    });
    let (status, headers, body) = get(addr, "/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["nodeEligible"], true);
    let (status, _, _) = get(addr, "/livez").await.unwrap();
    assert_eq!(status, 200);
    let samples = scrape(&registry);
    assert_eq!(samples["kubeproxy_proxy_healthz_total{code=\"200\"}"], 1.0);
    assert_eq!(samples["kubeproxy_proxy_livez_total{code=\"200\"}"], 1.0);

    drop(publisher);
    task.await.unwrap();
}

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// `GET path` over a fresh connection; the status code and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: svcnet\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn start(endpoint: Endpoint) -> SocketAddr {
    let addr = endpoint.local_addr().expect("bound");
    tokio::spawn(endpoint.serve());
    addr
}

fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

#[tokio::test]
async fn ready_follows_sync_then_lame_duck_while_health_stays_up() {
    let probes = Arc::new(Probes::default());
    let health = start(Endpoint::health(any_port()).await.unwrap()).await;
    let ready = start(Endpoint::ready(any_port(), probes.clone()).await.unwrap()).await;

    assert_eq!(get(health, "/health").await.0, 200);
    let (status, body) = get(ready, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("not synced"), "{body}");

    probes.set_synced();
    assert_eq!(get(ready, "/ready").await, (200, "OK".to_owned()));

    probes.start_lame_duck();
    assert_eq!(get(ready, "/ready").await.0, 503, "ready fails first");
    assert_eq!(get(health, "/health").await.0, 200, "while liveness holds");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    registry.register(
        "coredns_dns_requests",
        "Counter of DNS requests made per zone, protocol and family.",
        counter.clone(),
    );
    counter.inc_by(3);
    let addr = start(Endpoint::metrics(any_port(), Arc::new(registry)).await.unwrap()).await;
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE coredns_dns_requests counter"), "{body}");
    assert!(body.contains("coredns_dns_requests_total 3"), "{body}");
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind(any_port()).unwrap();
    let addr = taken.local_addr().unwrap();
    let Err(error) = Endpoint::health(addr).await else {
        panic!("bound a taken port")
    };
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

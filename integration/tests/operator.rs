//! The operator's surface of the real binary: `/health`, `/ready` and `/metrics` on their own
//! listeners with CoreDNS's semantics and metric names, the lame-duck drain on SIGTERM, and
//! DNS worker threads sharing the listen address.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};
use serde_json::json;
use svcnet_integration::{Svcnet, Transport, free_port, query_sync, write_objects};

const BIN: &str = env!("CARGO_BIN_EXE_svcnet");
const TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster with namespace `default` and the ClusterIP Service `web`.
fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    write_objects(
        dir.path(),
        "cluster.json",
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.80", "clusterIPs": ["10.96.0.80"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        ],
    );
    dir
}

/// svcnet with all three endpoints on free loopback ports and no upstreams.
struct Operated {
    svcnet: Svcnet,
    health: SocketAddr,
    ready: SocketAddr,
    metrics: SocketAddr,
    _cluster: tempfile::TempDir,
}

fn start(extra: &[&str]) -> Operated {
    let cluster = cluster();
    let addr = || SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let (health, ready, metrics) = (addr(), addr(), addr());
    let mut args = vec![
        "--upstreams=".to_owned(),
        format!("--health-listen={health}"),
        format!("--ready-listen={ready}"),
        format!("--metrics-listen={metrics}"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Operated {
        svcnet: Svcnet::start_manifests(BIN, cluster.path(), &args),
        health,
        ready,
        metrics,
        _cluster: cluster,
    }
}

/// `GET path` over HTTP/1.1: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap_or_else(|e| panic!("{addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    (status, body.to_owned())
}

/// One sample of the Prometheus text format: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of an exposition, comments left out. Label values here never contain quotes,
/// so the parser does not handle escapes.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample: {line}"));
            let value = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
            let (name, mut rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut labels = BTreeMap::new();
            while let Some((key, after)) = rest.split_once("=\"") {
                let (val, after) = after.split_once('"').unwrap_or_else(|| panic!("label: {line}"));
                labels.insert(key.trim_start_matches(',').to_owned(), val.to_owned());
                rest = after;
            }
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// The scraped samples, for sums over the series matching some labels.
struct Scrape(Vec<Sample>);

impl Scrape {
    fn take(addr: SocketAddr) -> Self {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        Self(parse(&body))
    }

    /// The sum of `name` over the series that have every label of `labels` (0 if none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

fn ask(server: SocketAddr, qname: &str, transport: Transport) -> ResponseCode {
    query_sync(server, &name(qname), RecordType::A, transport, TIMEOUT)
        .unwrap_or_else(|e| panic!("{qname} over {transport:?}: {e}"))
        .metadata
        .response_code
}

/// /ready, polled briefly: readiness follows sync by one task wake-up.
fn wait_ready(op: &Operated, expected: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = get(op.ready, "/ready");
        if status == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "/ready stays {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn probes_and_coredns_metrics() {
    let op = start(&[]);
    // With manifests the first sync happens before DNS starts.
    wait_ready(&op, 200);
    assert_eq!(get(op.health, "/health"), (200, "OK".to_owned()));

    let before = Scrape::take(op.metrics);
    let dns = op.svcnet.dns;
    for _ in 0..5 {
        assert_eq!(
            ask(dns, "web.default.svc.cluster.local.", Transport::Udp),
            ResponseCode::NoError
        );
    }
    for _ in 0..3 {
        assert_eq!(
            ask(dns, "web.default.svc.cluster.local.", Transport::Tcp),
            ResponseCode::NoError
        );
    }
    // Outside the cluster, with no upstream: REFUSED by forward, after a cache miss.
    for _ in 0..2 {
        assert_eq!(ask(dns, "example.com.", Transport::Udp), ResponseCode::Refused);
    }
    let after = Scrape::take(op.metrics);
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    let server = format!("dns://{dns}");
    let cluster = [
        ("server", server.as_str()),
        ("zone", "cluster.local."),
        ("view", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        cluster.iter().copied().chain(extra.iter().copied()).collect()
    };
    let requests = "coredns_dns_requests_total";
    let udp_a = with(&[("proto", "udp"), ("family", "1"), ("type", "A")]);
    assert_eq!(delta(requests, &udp_a), 5.0);
    let tcp_a = with(&[("proto", "tcp"), ("family", "1"), ("type", "A")]);
    assert_eq!(delta(requests, &tcp_a), 3.0);
    let answered = with(&[("rcode", "NOERROR"), ("plugin", "kubernetes")]);
    assert_eq!(delta("coredns_dns_responses_total", &answered), 8.0);
    let timed = with(&[("type", "A")]);
    assert_eq!(delta("coredns_dns_request_duration_seconds_count", &timed), 8.0);
    assert_eq!(
        delta(
            "coredns_dns_request_duration_seconds_bucket",
            &with(&[("type", "A"), ("le", "+Inf")])
        ),
        8.0
    );
    assert_eq!(
        delta("coredns_dns_request_size_bytes_count", &with(&[("proto", "udp")])),
        5.0
    );

    let root = [("server", server.as_str()), ("zone", "."), ("view", "")];
    let refused: Vec<_> = root
        .iter()
        .copied()
        .chain([("rcode", "REFUSED"), ("plugin", "forward")])
        .collect();
    assert_eq!(delta("coredns_dns_responses_total", &refused), 2.0);
    let misses = [("server", server.as_str()), ("zones", "."), ("view", "")];
    assert_eq!(delta("coredns_cache_misses_total", &misses), 2.0);

    assert_eq!(after.sum("coredns_panics_total", &[]), 0.0);
    assert_eq!(after.sum("coredns_build_info", &[("goversion", "rust")]), 1.0);
    for name in [
        "coredns_cache_entries",
        "coredns_forward_max_concurrent_rejects_total",
    ] {
        assert!(after.has(name), "{name} missing");
    }
}

#[test]
fn lame_duck_keeps_answering_while_not_ready_then_exits() {
    let mut op = start(&["--lameduck", "1s"]);
    wait_ready(&op, 200);

    // A steady load: a query every ~5 ms, each from a new source port, bounded in count.
    let dns = op.svcnet.dns;
    let stop = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) && sent.len() < 2000 {
                let at = Instant::now();
                let answered = query_sync(
                    dns,
                    &name("web.default.svc.cluster.local."),
                    RecordType::A,
                    Transport::Udp,
                    Duration::from_millis(500),
                )
                .is_ok();
                sent.push((at, answered));
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    let term = Instant::now();
    op.svcnet.sigterm();
    let not_ready_after = wait_ready(&op, 503);
    assert!(
        not_ready_after < Duration::from_millis(500),
        "{not_ready_after:?}"
    );
    assert_eq!(get(op.health, "/health").0, 200, "alive during lame duck");
    let status = op
        .svcnet
        .wait_exit(Duration::from_secs(3) + Duration::from_millis(500))
        .expect("exits within lameduck + 2 s");
    let exited = term.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = load.join().expect("load thread");

    assert!(status.success(), "{status}\n{}", op.svcnet.log());
    assert!(
        exited >= Duration::from_millis(950),
        "left lame duck early: {exited:?}"
    );
    assert!(exited <= Duration::from_secs(3), "took {exited:?}");
    // Every query up to the last one answered was answered: none was lost while draining.
    let last_answered = sent.iter().rposition(|(_, answered)| *answered).expect("answers");
    let lost = sent[..last_answered]
        .iter()
        .filter(|(_, answered)| !answered)
        .count();
    assert_eq!(lost, 0, "{lost} of {} queries lost", last_answered + 1);
    // And answers went on through the lame duck, up to its end.
    let (last_at, _) = sent[last_answered];
    assert!(
        last_at.saturating_duration_since(term) >= Duration::from_millis(900),
        "answers stopped {:?} after SIGTERM",
        last_at.saturating_duration_since(term)
    );
    let during = sent.iter().filter(|(at, ok)| *ok && *at > term).count();
    assert!(during > 50, "only {during} answers during lame duck");
}

#[test]
fn workers_share_the_listen_address() {
    let op = start(&["--dns-workers", "2"]);
    let dns = op.svcnet.dns;
    // Each query from its own source port: SO_REUSEPORT hashes them over both workers.
    for i in 0..200 {
        let transport = if i % 10 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        assert_eq!(
            ask(dns, "web.default.svc.cluster.local.", transport),
            ResponseCode::NoError,
            "query {i}"
        );
    }
    let log = op.svcnet.log();
    assert!(log.contains("workers=2"), "{log}");
    let metrics = Scrape::take(op.metrics);
    let server = format!("dns://{dns}");
    let answered = [("server", server.as_str()), ("rcode", "NOERROR")];
    assert!(metrics.sum("coredns_dns_responses_total", &answered) >= 200.0);
}

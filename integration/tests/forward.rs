//! Forwarding and its cache, against real servers on loopback: names outside the cluster zone
//! go to upstreams that are either a second svcnet serving its own zone or a small UDP/TCP
//! server written here, which records what it is asked and can truncate, or stop answering.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, PTR, SOA},
    },
};
use serde_json::json;
use svcnet_integration::{Svcnet, Transport, exchange, free_port, request, write_objects};

const BIN: &str = env!("CARGO_BIN_EXE_svcnet");
/// Long enough for two upstream timeouts of 2 s each.
const TIMEOUT: Duration = Duration::from_secs(10);

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// Asks `qname`/`qtype` the way `dig` does (RD, EDNS 1232).
fn ask(server: SocketAddr, qname: &str, qtype: RecordType, transport: Transport) -> Message {
    exchange(
        server,
        &request(&name(qname), qtype, Some(1232)),
        transport,
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{qname} {qtype} over {transport:?} to {server}: {e}"))
}

fn rdata(msg: &Message) -> Vec<String> {
    let mut v: Vec<String> = msg.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// A cluster with namespace `default` and the ClusterIP Service `web` (10.96.0.80).
fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    write_objects(
        dir.path(),
        "cluster.json",
        &[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.0.80", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        ],
    );
    dir
}

/// svcnet serving `cluster()` on cluster.local, forwarding with `flags`.
fn svcnet(dir: &tempfile::TempDir, flags: &[&str]) -> Svcnet {
    Svcnet::start_manifests(BIN, dir.path(), flags)
}

// === Upstream: a DNS server on one loopback port, UDP and TCP ===

type Respond = dyn Fn(&Message, Transport) -> Option<Message> + Send + Sync;

/// Answers with `respond` (`None`: no reply), and records every query it gets. Stops when dropped.
struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    threads: Vec<JoinHandle<()>>,
}

struct UpstreamState {
    stop: AtomicBool,
    silent: AtomicBool,
    seen: Mutex<Vec<(Transport, Message)>>,
    respond: Box<Respond>,
}

impl Upstream {
    fn start(respond: impl Fn(&Message, Transport) -> Option<Message> + Send + Sync + 'static) -> Self {
        let addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
        let udp = UdpSocket::bind(addr).expect("bind upstream UDP");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let tcp = TcpListener::bind(addr).expect("bind upstream TCP");
        tcp.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(UpstreamState {
            stop: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            respond: Box::new(respond),
        });
        let udp_state = Arc::clone(&state);
        let tcp_state = Arc::clone(&state);
        let threads = vec![
            std::thread::spawn(move || udp_state.serve_udp(&udp)),
            std::thread::spawn(move || tcp_state.serve_tcp(&tcp)),
        ];
        Self { addr, state, threads }
    }

    /// An upstream that never answers, though it keeps receiving.
    fn silent() -> Self {
        let upstream = Self::start(|_, _| None);
        upstream.silence();
        upstream
    }

    fn silence(&self) {
        self.state.silent.store(true, Ordering::Relaxed);
    }

    /// The queries for `qname` it got, with their transport, in order.
    fn seen(&self, qname: &str) -> Vec<(Transport, Message)> {
        let qname = name(qname);
        let seen = self.state.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .filter(|(_, q)| q.queries.first().is_some_and(|q| *q.name() == qname))
            .cloned()
            .collect()
    }

    /// How many forwarded queries it got: all but health probes (`.`) and loop checks.
    fn seen_forwarded(&self) -> usize {
        let seen = self.state.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .filter_map(|(_, q)| q.queries.first())
            .filter(|q| !q.name().is_root() && q.query_type() != RecordType::HINFO)
            .count()
    }
}

impl UpstreamState {
    fn reply(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let query = Message::from_vec(bytes).ok()?;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((transport, query.clone()));
        if self.silent.load(Ordering::Relaxed) {
            return None;
        }
        (self.respond)(&query, transport)?.to_vec().ok()
    }

    fn serve_udp(&self, socket: &UdpSocket) {
        let mut buf = [0u8; 65_535];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Some(reply) = self.reply(&buf[..len], Transport::Udp) {
                let _ = socket.send_to(&reply, from);
            }
        }
    }

    fn serve_tcp(&self, listener: &TcpListener) {
        while !self.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => self.serve_connection(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Length-prefixed messages until the client closes (RFC 1035 §4.2.2).
    fn serve_connection(&self, mut stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut len = [0u8; 2];
        while stream.read_exact(&mut len).is_ok() {
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut buf).is_err() {
                return;
            }
            let Some(reply) = self.reply(&buf, Transport::Tcp) else {
                continue;
            };
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                return;
            };
            let _ = stream.write_all(&reply_len.to_be_bytes());
            let _ = stream.write_all(&reply);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The start of a reply to `query`: its ID and question, RD copied, RA set, EDNS echoed.
fn reply_to(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = query.queries.clone();
    reply.edns = query.edns.clone();
    reply
}

/// `query` answered with an A record for each of `ips`, TTL 300.
fn addresses(query: &Message, ips: &[Ipv4Addr]) -> Message {
    let mut reply = reply_to(query);
    let owner = query.queries[0].name().clone();
    reply.answers = ips
        .iter()
        .map(|ip| Record::from_rdata(owner.clone(), 300, RData::A(A(*ip))))
        .collect();
    reply
}

// === Tests ===

#[test]
fn another_svcnets_answers_and_nxdomain_come_back_as_they_are() {
    // The upstream: a second svcnet, serving example.org.
    let upstream_dir = cluster();
    let upstream = svcnet(
        &upstream_dir,
        &["--cluster-domain", "example.org", "--upstreams="],
    );
    let dir = cluster();
    let svcnet = svcnet(&dir, &["--upstreams", &upstream.dns.to_string()]);
    for t in [Transport::Udp, Transport::Tcp] {
        let a = ask(svcnet.dns, "Web.Default.svc.EXAMPLE.org.", RecordType::A, t);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdata(&a), ["10.96.0.80"]);
        assert!(a.metadata.authoritative, "the upstream's AA passes through");
        assert_eq!(
            a.queries[0].name().to_ascii(),
            "Web.Default.svc.EXAMPLE.org.",
            "the question as the client wrote it"
        );

        let nx = ask(svcnet.dns, "nope.default.svc.example.org.", RecordType::A, t);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.answers.is_empty());
        assert_eq!(nx.authorities.len(), 1, "{nx:?}");
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nx.authorities[0].name.to_ascii(), "example.org.");
    }
    // The cluster's own names are still its own.
    let own = ask(
        svcnet.dns,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!(rdata(&own), ["10.96.0.80"]);
}

#[test]
fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let all: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    let upstream = Upstream::start(move |query, transport| {
        Some(match transport {
            Transport::Udp => {
                let mut partial = addresses(query, &all[..1]);
                partial.metadata.truncation = true;
                partial
            }
            Transport::Tcp => addresses(query, &all),
        })
    });
    let dir = cluster();
    let svcnet = svcnet(&dir, &["--upstreams", &upstream.addr.to_string()]);
    let reply = ask(svcnet.dns, "big.example.", RecordType::A, Transport::Udp);
    assert!(!reply.metadata.truncation);
    assert_eq!(rdata(&reply), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    let transports: Vec<Transport> = upstream.seen("big.example.").iter().map(|(t, _)| *t).collect();
    assert_eq!(transports, [Transport::Udp, Transport::Tcp]);
}

#[test]
fn a_tcp_client_is_forwarded_over_tcp_with_its_bits_and_edns() {
    let upstream = Upstream::start(|query, _| {
        let mut reply = addresses(query, &[Ipv4Addr::new(192, 0, 2, 7)]);
        reply.metadata.authentic_data = true;
        Some(reply)
    });
    let dir = cluster();
    let svcnet = svcnet(&dir, &["--upstreams", &upstream.addr.to_string()]);
    let mut query = request(&name("Mixed.Case.Example."), RecordType::A, Some(1400));
    query.metadata.checking_disabled = true;
    if let Some(edns) = query.edns.as_mut() {
        edns.set_dnssec_ok(true);
    }
    let reply = exchange(svcnet.dns, &query, Transport::Tcp, TIMEOUT).expect("reply");
    assert_eq!(rdata(&reply), ["192.0.2.7"]);
    // The reply's flags are the upstream's...
    assert!(reply.metadata.authentic_data && reply.metadata.recursion_available);
    assert!(!reply.metadata.authoritative);
    assert!(reply.metadata.checking_disabled);
    assert!(reply.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));

    // ...and the query it got was the client's, over the client's transport.
    let seen = upstream.seen("mixed.case.example.");
    assert_eq!(seen.len(), 1);
    let (transport, forwarded) = &seen[0];
    assert_eq!(*transport, Transport::Tcp);
    assert_eq!(forwarded.queries[0].name().to_ascii(), "Mixed.Case.Example.");
    assert!(forwarded.metadata.recursion_desired && forwarded.metadata.checking_disabled);
    let edns: &Edns = forwarded.edns.as_ref().expect("EDNS forwarded");
    assert!(edns.flags().dnssec_ok);
    assert_eq!(edns.max_payload(), 1400);
}

#[test]
fn answers_are_cached_and_a_cache_hit_echoes_the_question() {
    let upstream = Upstream::start(|query, _| Some(addresses(query, &[Ipv4Addr::new(192, 0, 2, 9)])));
    let dir = cluster();
    let svcnet = svcnet(&dir, &["--upstreams", &upstream.addr.to_string()]);
    let first = ask(svcnet.dns, "cached.example.", RecordType::A, Transport::Udp);
    assert_eq!(first.answers[0].ttl, 30, "capped at cache-ttl");
    std::thread::sleep(Duration::from_millis(1100));
    let query = request(&name("CACHED.example."), RecordType::A, Some(1232));
    let second = exchange(svcnet.dns, &query, Transport::Udp, TIMEOUT).expect("reply");
    assert_eq!(rdata(&second), ["192.0.2.9"]);
    assert_eq!(second.metadata.id, query.metadata.id);
    assert_eq!(second.queries[0].name().to_ascii(), "CACHED.example.");
    assert!(second.answers[0].ttl < 30, "the TTL counts down");
    assert_eq!(
        upstream.seen("cached.example.").len(),
        1,
        "the second came from the cache"
    );
    // Another type is another question.
    ask(svcnet.dns, "cached.example.", RecordType::AAAA, Transport::Udp);
    assert_eq!(upstream.seen("cached.example.").len(), 2);
}

#[test]
fn a_silent_upstream_is_failed_over_then_skipped_and_stale_answers_stand_in() {
    let answering = |query: &Message, _: Transport| Some(addresses(query, &[Ipv4Addr::new(192, 0, 2, 1)]));
    let (first, second) = (Upstream::start(answering), Upstream::start(answering));
    let dir = cluster();
    let upstreams = format!("{},{}", first.addr, second.addr);
    let svcnet = svcnet(&dir, &["--upstreams", &upstreams, "--cache-ttl", "1s"]);
    let stale = ask(svcnet.dns, "stale.example.", RecordType::A, Transport::Udp);
    assert_eq!(rdata(&stale), ["192.0.2.1"]);

    // The first stops answering: every query is still answered, by the second...
    first.silence();
    let before = first.seen_forwarded();
    let mut asked = 0;
    while first.seen_forwarded() < before + 2 {
        let qname = format!("failover-{asked}.example.");
        let reply = ask(svcnet.dns, &qname, RecordType::A, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{qname}");
        asked += 1;
        assert!(asked < 30, "the first upstream was never chosen");
    }
    // ...and after two failures in a row the first is skipped without waiting for it.
    for i in 0..5 {
        let start = Instant::now();
        ask(
            svcnet.dns,
            &format!("skipped-{i}.example."),
            RecordType::A,
            Transport::Udp,
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "waited on the silent upstream"
        );
    }
    assert_eq!(first.seen_forwarded(), before + 2);

    // Both silent: the expired entry is served stale (RFC 8767), anything else fails.
    second.silence();
    let reply = ask(svcnet.dns, "stale.example.", RecordType::A, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata(&reply), ["192.0.2.1"]);
    assert_eq!(reply.answers[0].ttl, 30);
    let reply = ask(svcnet.dns, "never-cached.example.", RecordType::A, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn reverse_names_the_cluster_does_not_know_fall_through_upstream() {
    let upstream = Upstream::start(|query, _| {
        let mut reply = reply_to(query);
        let owner = query.queries[0].name().clone();
        reply.answers.push(Record::from_rdata(
            owner,
            300,
            RData::PTR(PTR(name("host.example.net."))),
        ));
        Some(reply)
    });
    let dir = cluster();
    let svcnet = svcnet(&dir, &["--upstreams", &upstream.addr.to_string()]);
    let outside = ask(
        svcnet.dns,
        "4.3.2.1.in-addr.arpa.",
        RecordType::PTR,
        Transport::Udp,
    );
    assert_eq!(rdata(&outside), ["host.example.net."]);
    // A ClusterIP is answered by the cluster, and the cluster domain never falls through.
    let cluster_ip = ask(
        svcnet.dns,
        "80.0.96.10.in-addr.arpa.",
        RecordType::PTR,
        Transport::Udp,
    );
    assert_eq!(rdata(&cluster_ip), ["web.default.svc.cluster.local."]);
    let nx = ask(
        svcnet.dns,
        "nope.default.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(upstream.seen("80.0.96.10.in-addr.arpa.").is_empty());
    assert!(upstream.seen("nope.default.svc.cluster.local.").is_empty());
}

#[test]
fn stub_domains_take_their_names_and_the_upstreams_the_rest() {
    let corp = Upstream::start(|query, _| Some(addresses(query, &[Ipv4Addr::new(192, 0, 2, 2)])));
    let default = Upstream::start(|query, _| Some(addresses(query, &[Ipv4Addr::new(192, 0, 2, 1)])));
    let dir = cluster();
    let stub = format!("corp.example={}", corp.addr);
    let svcnet = svcnet(
        &dir,
        &["--upstreams", &default.addr.to_string(), "--stub-domains", &stub],
    );
    let inside = ask(svcnet.dns, "www.corp.example.", RecordType::A, Transport::Udp);
    assert_eq!(rdata(&inside), ["192.0.2.2"]);
    let outside = ask(svcnet.dns, "www.example.", RecordType::A, Transport::Udp);
    assert_eq!(rdata(&outside), ["192.0.2.1"]);
    assert!(default.seen("www.corp.example.").is_empty());
    assert!(corp.seen("www.example.").is_empty());
}

#[test]
fn queries_past_forward_max_concurrent_are_refused() {
    let upstream = Upstream::silent();
    let dir = cluster();
    let svcnet = svcnet(
        &dir,
        &[
            "--upstreams",
            &upstream.addr.to_string(),
            "--forward-max-concurrent",
            "2",
        ],
    );
    // Two queries wait on the silent upstream...
    let waiting: Vec<UdpSocket> = (0..2)
        .map(|i| {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let query = request(&name(&format!("wait-{i}.example.")), RecordType::A, None);
            socket
                .send_to(&query.to_vec().expect("encode"), svcnet.dns)
                .expect("send");
            socket
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    while upstream.seen_forwarded() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...so a third is refused at once.
    let start = Instant::now();
    let refused = ask(svcnet.dns, "third.example.", RecordType::A, Transport::Udp);
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(start.elapsed() < Duration::from_secs(1));
    // The two waiting get SERVFAIL once the upstream timed out.
    for socket in waiting {
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut buf = [0u8; 512];
        let len = socket.recv(&mut buf).expect("a reply to a waiting query");
        let reply = Message::from_vec(&buf[..len]).expect("parse");
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }
}

#[test]
fn a_forwarding_loop_stops_svcnet_at_start() {
    // `looping` forwards to `other`, which forwards back to `looping`.
    let dir = cluster();
    let looping_addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let other = svcnet(&dir, &["--upstreams", &looping_addr.to_string()]);
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new(BIN)
        .args(["run", "--manifests"])
        .arg(dir.path())
        .args(["--dns-listen", &looping_addr.to_string()])
        .args(["--upstreams", &other.dns.to_string()])
        .env("RUST_LOG", "info,hickory_server=warn")
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("start svcnet");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("svcnet kept running in a forwarding loop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(log.path()).expect("read log");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("upstream {} forwards queries back to svcnet", other.dns))
            && log.contains("/etc/resolv.conf"),
        "{log}"
    );
}

/// The SOA a stub would put in a negative answer, for the negative-caching case below.
fn soa(zone: &str, minimum: u32) -> Record {
    let soa = SOA::new(
        name(&format!("ns.{zone}")),
        name(&format!("host.{zone}")),
        1,
        7200,
        900,
        86400,
        minimum,
    );
    Record::from_rdata(name(zone), 3600, RData::SOA(soa))
}

#[test]
fn nxdomain_is_cached_for_the_soa_minimum() {
    let upstream = Upstream::start(|query, _| {
        let mut reply = reply_to(query);
        reply.metadata.response_code = ResponseCode::NXDomain;
        reply.authorities.push(soa("example.", 10));
        Some(reply)
    });
    let dir = cluster();
    let svcnet = svcnet(&dir, &["--upstreams", &upstream.addr.to_string()]);
    for _ in 0..2 {
        let nx = ask(svcnet.dns, "missing.example.", RecordType::A, Transport::Udp);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert!(nx.authorities[0].ttl <= 10, "RFC 2308: the SOA minimum");
    }
    assert_eq!(upstream.seen("missing.example.").len(), 1);
}

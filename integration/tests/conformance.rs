//! CoreDNS's own kubernetes-plugin test vectors, asked of the running svcnet.
//!
//! The vectors are not copied into this repository: they are read from
//! `../shared/conformance/coredns-kubernetes-cases.json` (or `$SVCNET_CONFORMANCE`). Each group's
//! fixture is written as manifests, svcnet starts with the group's options, every case is sent
//! over UDP and the reply is compared the way the file's `meta.comparison_semantics` says.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use serde_json::Value;
use svcnet_integration::{Svcnet, Transport, query_sync, write_objects};

/// Groups the issue leaves optional: svcnet does not implement multicluster or zonal names.
const OPTIONAL_GROUPS: &[&str] = &["multicluster", "zonal", "zonal_disabled"];

fn vectors_path() -> PathBuf {
    std::env::var_os("SVCNET_CONFORMANCE").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/conformance/coredns-kubernetes-cases.json")
        },
        PathBuf::from,
    )
}

#[test]
fn coredns_kubernetes_plugin_vectors() {
    let path = vectors_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!(
            "conformance: SKIPPED: no test vectors at {} (set SVCNET_CONFORMANCE)",
            path.display()
        );
        return;
    };
    let vectors: Value = serde_json::from_str(&text).expect("vectors are JSON");
    let upstream = StubUpstream::start();

    let mut passed = 0;
    let mut failures = Vec::new();
    for group in vectors["groups"].as_array().expect("groups") {
        let id = group["id"].as_str().expect("group id");
        if OPTIONAL_GROUPS.contains(&id) {
            println!("conformance: group {id}: not run (optional, not implemented)");
            continue;
        }
        let fixture = &vectors["fixtures"][group["fixture"].as_str().expect("fixture name")];
        let (group_passed, group_failures) = run_group(group, fixture, upstream.addr);
        println!(
            "conformance: group {id}: {group_passed} of {} cases passed",
            group_passed + group_failures.len()
        );
        passed += group_passed;
        failures.extend(group_failures);
    }
    println!(
        "conformance: {passed} of {} cases passed",
        passed + failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn run_group(group: &Value, fixture: &Value, upstream: SocketAddr) -> (usize, Vec<String>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cases = group["cases"].as_array().expect("cases");
    let mut objects = fixture["objects"].as_array().expect("objects").clone();
    objects.extend(implied_namespaces(fixture, cases));
    write_objects(dir.path(), "fixture.json", &objects);

    let args = group_flags(group, upstream);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = env!("CARGO_BIN_EXE_svcnet");
    // The kubeconfig of an unsynced run must outlive the process that reads it.
    let (svcnet, _kubeconfig) = if group
        .get("api_state_override")
        .is_some_and(|o| o["has_synced"] == false)
    {
        let (svcnet, kubeconfig) = start_unsynced(bin, &args);
        (svcnet, Some(kubeconfig))
    } else {
        (Svcnet::start_manifests(bin, dir.path(), &args), None)
    };

    let asserts_nothing = group["assertions"][0]
        .as_str()
        .is_some_and(|a| a.starts_with("NONE ENFORCED"));
    let asserts_tc = group["assertions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s.as_str().is_some_and(|s| s.starts_with("TC"))));
    let mut passed = 0;
    let mut failures = Vec::new();
    for case in cases {
        match check_case(&svcnet, case, asserts_nothing, asserts_tc) {
            Ok(()) => passed += 1,
            Err(why) => failures.push(format!(
                "{}: {} {}: {why}",
                case["id"].as_str().unwrap_or("?"),
                case["qname"],
                case["qtype"]
            )),
        }
    }
    (passed, failures)
}

/// The mock API of a fixture says which namespaces exist by rule rather than by object
/// (`namespace_rule`); the manifests need them as objects.
fn implied_namespaces(fixture: &Value, cases: &[Value]) -> Vec<Value> {
    let rule = fixture["namespace_rule"].as_str().unwrap_or_default();
    let missing: Vec<&str> = ["pod-nons", "nsnoexist"]
        .into_iter()
        .filter(|ns| rule.contains(ns))
        .collect();
    let declared: BTreeSet<&str> = fixture["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["kind"] == "Namespace")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let mut names = BTreeSet::new();
    for case in cases {
        let qname = case["qname"].as_str().unwrap_or_default().to_ascii_lowercase();
        let labels: Vec<&str> = qname.trim_end_matches('.').split('.').collect();
        // `... <ns>.(svc|pod).cluster.local`
        if let Some(i) = labels.iter().rposition(|l| *l == "svc" || *l == "pod")
            && i > 0
            && labels[i + 1..] == ["cluster", "local"]
        {
            names.insert(labels[i - 1].to_owned());
        }
    }
    names
        .into_iter()
        .filter(|n| !missing.contains(&n.as_str()) && !declared.contains(n.as_str()))
        .map(|n| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect()
}

fn group_flags(group: &Value, upstream: SocketAddr) -> Vec<String> {
    let options = &group["plugin_options"];
    let zones: Vec<&str> = group["zones"]
        .as_array()
        .expect("zones")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut flags = vec![
        "--cluster-domain".to_owned(),
        zones[0].trim_end_matches('.').to_owned(),
    ];
    for zone in &zones[1..] {
        flags.extend(["--dns-zones".to_owned(), zone.trim_end_matches('.').to_owned()]);
    }
    for ns in options["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        flags.extend(["--namespaces".to_owned(), ns.to_owned()]);
    }
    flags.extend([
        "--pods".to_owned(),
        options["pods"].as_str().unwrap_or("disabled").to_owned(),
    ]);
    flags.extend([
        "--dns-ttl".to_owned(),
        options["ttl"].as_u64().unwrap_or(5).to_string(),
    ]);
    if options["ignore"] == "empty_service" {
        flags.push("--ignore-empty-service".to_owned());
    }
    flags.extend(["--upstreams".to_owned(), upstream.to_string()]);
    // The vectors' own words: "fallthrough is never enabled"; kubeadm's default enables it
    // for reverse names, which would send the reverse group's NXDOMAIN cases upstream.
    flags.push("--dns-fallthrough=".to_owned());
    flags
}

/// svcnet pointed at an API server that never answers: it never syncs.
fn start_unsynced(bin: &str, flags: &[&str]) -> (Svcnet, tempfile::NamedTempFile) {
    let dead = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
    std::fs::write(
        kubeconfig.path(),
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: dead, cluster: {{server: 'https://127.0.0.1:{dead}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: dead, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
    let port = svcnet_integration::free_port();
    let dns: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--kubeconfig".into(),
        kubeconfig.path().display().to_string(),
    ];
    args.extend([
        "--dns-listen".into(),
        dns.to_string(),
        "--startup-timeout".into(),
        "100ms".into(),
    ]);
    args.extend(flags.iter().map(|s| (*s).to_owned()));
    (Svcnet::start(bin, &args, dns), kubeconfig)
}

fn check_case(svcnet: &Svcnet, case: &Value, asserts_nothing: bool, asserts_tc: bool) -> Result<(), String> {
    let qname = Name::from_ascii(case["qname"].as_str().ok_or("no qname")?).map_err(|e| e.to_string())?;
    let qtype = RecordType::from_str(case["qtype"].as_str().ok_or("no qtype")?).map_err(|e| e.to_string())?;
    let reply = query_sync(svcnet.dns, &qname, qtype, Transport::Udp, Duration::from_secs(5))
        .map_err(|e| format!("no reply: {e}"))?;

    let want_rcode = match case["rcode"].as_str() {
        Some("NOERROR") => ResponseCode::NoError,
        Some("NXDOMAIN") => ResponseCode::NXDomain,
        Some("SERVFAIL") => ResponseCode::ServFail,
        other => return Err(format!("unknown rcode {other:?} in vectors")),
    };
    if reply.metadata.response_code != want_rcode {
        return Err(format!(
            "rcode {} want {want_rcode}",
            reply.metadata.response_code
        ));
    }
    if asserts_nothing {
        // The Go test ignores its own comparison for this group; the rcode is its intent.
        return Ok(());
    }
    if !reply.metadata.authoritative {
        return Err("AA not set".into());
    }
    if asserts_tc && reply.metadata.truncation != case["tc"].as_bool().unwrap_or(false) {
        return Err(format!("TC {} want {}", reply.metadata.truncation, case["tc"]));
    }
    compare_section("answer", &reply.answers, &case["answer"])?;
    compare_section("authority", &reply.authorities, &case["authority"])?;
    compare_section("additional", &reply.additionals, &case["additional"])?;
    check_cname_first(&reply)
}

/// CoreDNS writes a CNAME before the records of its target (glibc relies on it).
fn check_cname_first(reply: &Message) -> Result<(), String> {
    let first_other = reply
        .answers
        .iter()
        .position(|r| r.record_type() != RecordType::CNAME);
    let last_cname = reply
        .answers
        .iter()
        .rposition(|r| r.record_type() == RecordType::CNAME);
    match (first_other, last_cname) {
        (Some(o), Some(c)) if c > o => Err("CNAME after the records of its target".into()),
        _ => Ok(()),
    }
}

fn compare_section(section: &str, got: &[Record], want: &Value) -> Result<(), String> {
    let want = want.as_array().ok_or("section missing in vectors")?;
    let mut got: Vec<String> = got.iter().map(actual_rr).collect();
    let mut want: Vec<(String, bool)> = want.iter().map(expected_rr).collect::<Result<_, _>>()?;
    got.sort();
    want.sort();
    if got.len() != want.len() {
        return Err(format!(
            "{section}: {} records {got:?}, want {} {want:?}",
            got.len(),
            want.len()
        ));
    }
    for (g, (w, ignore_ttl)) in got.iter().zip(&want) {
        let matches = if *ignore_ttl {
            without_ttl(g) == without_ttl(w)
        } else {
            g == w
        };
        if !matches {
            return Err(format!("{section}: got {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

/// `owner ttl TYPE rdata`, with only the fields the Go harness compares.
fn actual_rr(r: &Record) -> String {
    let rdata = match &r.data {
        RData::A(a) => a.to_string(),
        RData::AAAA(a) => a.to_string(),
        RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
        RData::CNAME(n) => n.0.to_string(),
        RData::PTR(n) => n.0.to_string(),
        RData::NS(n) => n.0.to_string(),
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
            .join(""),
        RData::SOA(s) => s.mname.to_string(),
        other => format!("{other:?}"),
    };
    format!("{} {} {} {}", r.name, r.ttl, r.record_type(), rdata)
}

/// The expected record in the same form, and whether its TTL is exempt (303 in the Go tests).
fn expected_rr(rr: &Value) -> Result<(String, bool), String> {
    let field = |k: &str| {
        rr[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("record without {k}: {rr}"))
    };
    let (name, rtype, rdata) = (field("name")?, field("type")?, field("rdata")?);
    let ttl = rr["ttl"].as_u64().ok_or("record without ttl")?;
    let rdata = match rtype.as_str() {
        // Compare addresses by value so that textual forms need not agree.
        "AAAA" => Ipv6Addr::from_str(&rdata).map_err(|e| e.to_string())?.to_string(),
        "SOA" => rdata.split_whitespace().next().unwrap_or_default().to_owned(),
        _ => rdata,
    };
    Ok((format!("{name} {ttl} {rtype} {rdata}"), ttl == 303))
}

fn without_ttl(rr: &str) -> String {
    let mut parts: Vec<&str> = rr.split(' ').collect();
    if parts.len() > 1 {
        parts.remove(1);
    }
    parts.join(" ")
}

/// The upstream of the Go tests (`Upstub`): whatever is asked, it answers `ext.interwebs.test.
/// A 1.2.3.4` with the TC bit set.
struct StubUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StubUpstream {
    fn start() -> Self {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind stub upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.queries = query.queries.clone();
                reply.metadata.truncation = true;
                let owner = Name::from_ascii("ext.interwebs.test.").expect("name");
                reply
                    .answers
                    .push(Record::from_rdata(owner, 5, RData::A(A::new(1, 2, 3, 4))));
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StubUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

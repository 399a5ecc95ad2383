use super::*;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn encode(metrics: &DnsMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

fn report(qname: &Name, qtype: RecordType, rcode: ResponseCode, plugin: Plugin) -> Report<'_> {
    Report {
        qname: Some(qname),
        qtype: Some(qtype),
        datagram: true,
        ipv4: true,
        request_len: 40,
        rcode,
        plugin,
        started: Instant::now(),
    }
}

#[test]
fn names_and_labels_are_coredns() {
    let metrics = DnsMetrics::default();
    let zones = [name("cluster.local."), name("in-addr.arpa."), name("corp.")];
    let server = ServerMetrics::new(metrics.clone(), "0.0.0.0:53".parse().unwrap(), &zones);
    let web = name("web.default.svc.Cluster.Local.");
    server.report(&report(
        &web,
        RecordType::A,
        ResponseCode::NoError,
        Plugin::Kubernetes,
    ));
    server.report(&report(
        &web,
        RecordType::A,
        ResponseCode::NoError,
        Plugin::Kubernetes,
    ));
    let external = name("example.com.");
    server.report(&report(
        &external,
        RecordType::CAA,
        ResponseCode::NXDomain,
        Plugin::Forward,
    ));
    let text = encode(&metrics);
    for line in [
        r#"coredns_dns_requests_total{server="dns://:53",zone="cluster.local.",view="",proto="udp",family="1",type="A"} 2"#,
        r#"coredns_dns_requests_total{server="dns://:53",zone=".",view="",proto="udp",family="1",type="other"} 1"#,
        r#"coredns_dns_responses_total{server="dns://:53",zone="cluster.local.",view="",rcode="NOERROR",plugin="kubernetes"} 2"#,
        r#"coredns_dns_responses_total{server="dns://:53",zone=".",view="",rcode="NXDOMAIN",plugin="forward"} 1"#,
        r#"coredns_dns_request_duration_seconds_count{server="dns://:53",zone="cluster.local.",view="",type="A"} 2"#,
        r#"coredns_dns_request_duration_seconds_bucket{le="0.00025",server="dns://:53",zone=".",view="",type="other"}"#,
        r#"coredns_dns_request_duration_seconds_bucket{le="8.192",server="dns://:53",zone=".",view="",type="other"}"#,
        r#"coredns_dns_request_size_bytes_sum{server="dns://:53",zone=".",view="",proto="udp"} 40.0"#,
        r#"coredns_build_info{version=""#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

#[test]
fn the_zone_is_the_longest_served_zone_or_the_root() {
    let zones = [name("in-addr.arpa."), name("10.in-addr.arpa."), name("corp.")];
    let server = ServerMetrics::new(DnsMetrics::default(), "127.0.0.1:5353".parse().unwrap(), &zones);
    assert_eq!(server.server.as_str(), "dns://127.0.0.1:5353");
    let zone = |qname: &str| server.zone(Some(&name(qname))).to_string();
    assert_eq!(zone("1.0.0.10.in-addr.arpa."), "10.in-addr.arpa.");
    assert_eq!(zone("1.0.0.11.in-addr.arpa."), "in-addr.arpa.");
    assert_eq!(zone("host.eu.corp."), "corp.");
    assert_eq!(zone("notcorp."), ".");
    assert_eq!(server.zone(None).as_str(), ".");
}

#[test]
fn uncommon_types_and_rcodes_are_bucketed_as_coredns_does() {
    assert_eq!(qtype_label(RecordType::HTTPS), "HTTPS");
    assert_eq!(qtype_label(RecordType::CAA), "other");
    assert_eq!(qtype_label(RecordType::Unknown(65280)), "other");
    assert_eq!(rcode_label(ResponseCode::ServFail), "SERVFAIL");
    assert_eq!(rcode_label(ResponseCode::BADVERS), "BADSIG");
    assert_eq!(rcode_label(ResponseCode::Unknown(3000)), "3000");
}

#[test]
fn cache_and_forward_series() {
    let metrics = DnsMetrics::default();
    let server = ServerMetrics::new(metrics.clone(), "[::]:53".parse().unwrap(), &[]);
    server.cache(CacheResult::Miss, (0, 0));
    server.cache(CacheResult::HitSuccess, (3, 1));
    let upstream = metrics.forward().upstream("10.0.0.2:53".parse().unwrap());
    upstream.request();
    upstream.response(ResponseCode::NoError, Duration::from_millis(3));
    upstream.healthcheck_failed();
    metrics.forward().rejected();
    let text = encode(&metrics);
    for line in [
        r#"coredns_cache_misses_total{server="dns://:53",zones=".",view=""} 1"#,
        r#"coredns_cache_hits_total{server="dns://:53",type="success",zones=".",view=""} 1"#,
        r#"coredns_cache_entries{server="dns://:53",type="success",zones=".",view=""} 3"#,
        r#"coredns_cache_entries{server="dns://:53",type="denial",zones=".",view=""} 1"#,
        r#"coredns_forward_requests_total{to="10.0.0.2:53"} 1"#,
        r#"coredns_forward_responses_total{to="10.0.0.2:53",rcode="NOERROR"} 1"#,
        r#"coredns_forward_request_duration_seconds_count{to="10.0.0.2:53",rcode="NOERROR"} 1"#,
        r#"coredns_forward_healthcheck_failures_total{to="10.0.0.2:53"} 1"#,
        "coredns_forward_max_concurrent_rejects_total 1",
        "coredns_panics_total 0",
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

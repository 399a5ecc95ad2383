//! Loading as a whole: defaults, file plus flags, error messages, and the `to_yaml` round trip.
//! Expected values follow the documented rules (kubeadm's Corefile for defaults), written out
//! by hand rather than copied from output.

use std::{
    collections::BTreeSet,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Command, Parser};
use tempfile::NamedTempFile;

use super::*;

/// `svcnet run`'s flags, as the binary flattens them.
#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

fn flags(args: &[&str]) -> Settings {
    let argv = std::iter::once("svcnet").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap().settings
}

fn yaml_file(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

/// A resolv.conf naming a real resolver and a local stub (systemd-resolved's).
fn resolv_conf() -> NamedTempFile {
    yaml_file("search example.org\nnameserver 10.0.0.2\nnameserver 127.0.0.53\n")
}

fn key_errors(settings: Settings) -> Vec<String> {
    let resolv = resolv_conf();
    let errors = settings.validate_with(resolv.path()).unwrap_err();
    errors.iter().map(ToString::to_string).collect()
}

#[test]
fn defaults_are_kubeadms_corefile() {
    let resolv = resolv_conf();
    let config = Settings::default().validate_with(resolv.path()).unwrap();
    let expected = Config {
        source: Source::ApiServer { kubeconfig: None },
        node_name: None,
        dns: DnsConfig {
            listen: vec![sa("0.0.0.0:53")],
            zones: vec![
                "cluster.local.".into(),
                "in-addr.arpa.".into(),
                "ip6.arpa.".into(),
            ],
            fallthrough: vec!["in-addr.arpa.".into(), "ip6.arpa.".into()],
            ttl: 30,
            pods: PodsMode::Insecure,
            endpoint_pod_names: false,
            namespaces: vec![],
            ignore_empty_service: false,
            noendpoints: false,
            startup_timeout: Duration::from_secs(5),
            // 127.0.0.53:53 is caught by svcnet's own 0.0.0.0:53, so it is left out.
            upstreams: vec![sa("10.0.0.2:53")],
            stub_domains: vec![],
            forward_max_concurrent: 1000,
            cache_ttl: Duration::from_secs(30),
            cache_serve_stale: Duration::from_secs(3600),
            workers: 0,
            autopath: true,
        },
        admin: AdminConfig {
            health_listen: Some(sa("0.0.0.0:8080")),
            ready_listen: Some(sa("0.0.0.0:8181")),
            metrics_listen: Some(sa("0.0.0.0:9153")),
            lameduck: Duration::from_secs(5),
        },
        proxy: ProxyConfig {
            mode: ProxyMode::Off,
            cluster_cidrs: vec![],
            nodeport_addresses: vec![],
            min_sync_period: Duration::from_millis(250),
            full_sync_period: Duration::from_secs(3600),
            sync_period: Duration::from_secs(30),
            healthz_listen: Some(sa("0.0.0.0:10256")),
        },
    };
    assert_eq!(config, expected);
}

#[test]
fn listen_default_depends_on_the_source() {
    let resolv = resolv_conf();
    let manifests = Settings {
        manifests: Some("/m".into()),
        ..Settings::default()
    };
    let config = manifests.validate_with(resolv.path()).unwrap();
    assert_eq!(config.source, Source::Manifests("/m".into()));
    assert_eq!(config.dns.listen, [sa("127.0.0.1:5353")]);
    // Listening on a high loopback port, the local stub on port 53 is a real upstream.
    assert_eq!(config.dns.upstreams, [sa("10.0.0.2:53"), sa("127.0.0.53:53")]);

    let kubeconfig = Settings {
        kubeconfig: Some("/k".into()),
        ..Settings::default()
    };
    let config = kubeconfig.validate_with(resolv.path()).unwrap();
    assert_eq!(
        config.source,
        Source::ApiServer {
            kubeconfig: Some("/k".into())
        }
    );
    assert_eq!(config.dns.listen, [sa("0.0.0.0:53")]);
}

#[test]
fn flags_override_the_file_key_by_key() {
    let file = yaml_file(
        "manifests: /from/file\n\
         dns-ttl: 10\n\
         pods: verified\n\
         dns-listen: ['127.0.0.1:1053', '[::1]:1053']\n\
         namespaces: [default, kube-system]\n\
         upstreams: [10.0.0.2]\n",
    );
    let flags = flags(&[
        "--dns-ttl",
        "20",
        "--namespaces",
        "default",
        "--endpoint-pod-names",
    ]);
    let config = load(Some(file.path()), flags).unwrap();
    // From the flags.
    assert_eq!(config.dns.ttl, 20);
    assert_eq!(config.dns.namespaces, ["default"]);
    assert!(config.dns.endpoint_pod_names);
    // From the file, no flag given.
    assert_eq!(config.source, Source::Manifests("/from/file".into()));
    assert_eq!(config.dns.pods, PodsMode::Verified);
    assert_eq!(config.dns.listen, [sa("127.0.0.1:1053"), sa("[::1]:1053")]);
    assert_eq!(config.dns.upstreams, [sa("10.0.0.2:53")]);
    // Neither: defaults.
    assert_eq!(config.dns.zones[0], "cluster.local.");
    assert!(!config.dns.noendpoints);
}

#[test]
fn flag_syntax() {
    assert_eq!(
        flags(&[]),
        Settings {
            node_name: flags(&[]).node_name,
            ..Settings::default()
        }
    );
    assert_eq!(flags(&["--noendpoints"]).noendpoints, Some(true));
    assert_eq!(flags(&["--noendpoints", "false"]).noendpoints, Some(false));
    assert_eq!(
        flags(&["--ignore-empty-service=true"]).ignore_empty_service,
        Some(true)
    );
    let s = flags(&[
        "--dns-listen",
        "127.0.0.1:53",
        "--dns-listen",
        "[::1]:53,10.0.0.1:53",
    ]);
    assert_eq!(
        s.dns_listen,
        strings(&["127.0.0.1:53", "[::1]:53", "10.0.0.1:53"])
    );
    assert_eq!(flags(&["--proxy", "dry-run"]).proxy, Some(ProxyMode::DryRun));
    assert_eq!(flags(&["--pods", "disabled"]).pods, Some(PodsMode::Disabled));

    let err = Cli::try_parse_from(["svcnet", "--pods", "sometimes"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--pods") && err.contains("disabled, insecure, verified"),
        "{err}"
    );
    let err = Cli::try_parse_from(["svcnet", "--dns-ttl=-1"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--dns-ttl"), "{err}");
}

#[test]
fn an_empty_flag_value_is_an_empty_list() {
    let resolv = resolv_conf();
    let config = flags(&["--upstreams="]).validate_with(resolv.path()).unwrap();
    assert_eq!(config.dns.upstreams, []);
}

#[test]
fn keys_and_flags_are_the_same_names() {
    let command = Settings::augment_args(Command::new("svcnet"));
    let flag_names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .map(str::to_owned)
        .collect();
    // serde lists every key it accepts when it meets one it does not.
    let file = yaml_file("no-such-key: 1\n");
    let message = check_file(file.path()).unwrap_err().to_string();
    let (_, listed) = message.split_once("expected one of ").expect(&message);
    let keys: BTreeSet<String> = listed
        .split(", ")
        .map(|key| key.trim_matches('`').to_owned())
        .collect();
    assert_eq!(keys, flag_names);
    assert_eq!(keys.len(), 32, "{keys:?}");
}

#[test]
fn unknown_key_names_the_key_file_and_line() {
    let file = yaml_file("dns-ttl: 30\ndns-tll: 40\n");
    let error = check_file(file.path()).unwrap_err();
    let ConfigError::Parse { line, column, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!((*line, *column), (Some(2), Some(1)));
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("{}:2:1: ", file.path().display())),
        "{message}"
    );
    assert!(
        message.contains("`dns-tll`") && message.contains("dns-ttl"),
        "{message}"
    );
}

#[test]
fn wrong_type_in_file_names_the_key_and_what_is_allowed() {
    let file = yaml_file("pods: insecure\ndns-ttl: soon\n");
    let message = check_file(file.path()).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:2:10: dns-ttl: ", file.path().display())),
        "{message}"
    );
    assert!(message.contains("0..=3600"), "{message}");

    let file = yaml_file("pods: sometimes\n");
    let message = check_file(file.path()).unwrap_err().to_string();
    assert!(message.contains("pods: "), "{message}");
    assert_eq!(
        message.matches("disabled, insecure, verified").count(),
        1,
        "{message}"
    );

    let file = yaml_file("{dns-listen: 127.0.0.1:53}\n");
    let message = check_file(file.path()).unwrap_err().to_string();
    assert!(
        message.contains("dns-listen: ") && message.contains("a list of ADDR:PORT"),
        "{message}"
    );
}

#[test]
fn unreadable_and_non_mapping_files() {
    let missing = Path::new("/nonexistent/svcnet.yaml");
    let error = check_file(missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/svcnet.yaml"));

    let file = yaml_file("- dns-ttl\n");
    assert!(matches!(check_file(file.path()), Err(ConfigError::Parse { .. })));
}

#[test]
fn an_empty_file_sets_nothing() {
    let file = yaml_file("# nothing here yet\n");
    let config = check_file(file.path()).unwrap();
    assert_eq!(config.dns.zones, ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]);
    assert_eq!(config.dns.ttl, 30);
}

#[test]
fn every_bad_value_is_reported_with_its_key_and_what_is_allowed() {
    let settings = Settings {
        manifests: Some("/m".into()),
        kubeconfig: Some("/k".into()),
        node_name: Some("Node_1".into()),
        cluster_domain: Some("bad..domain".into()),
        dns_zones: strings(&["10.0.0.0/12", "fd00::/62"]),
        dns_listen: strings(&["localhost:53"]),
        dns_ttl: Some(4000),
        namespaces: strings(&["Kube-System"]),
        startup_timeout: Some("soon".into()),
        upstreams: strings(&["dns.google"]),
        proxy: Some(ProxyMode::Apply),
        cluster_cidr: strings(&["10.244.0.0/33"]),
        nodeport_addresses: strings(&["192.168.1.10"]),
        proxy_min_sync_period: Some("often".into()),
        proxy_full_sync_period: Some("0s".into()),
        ..Settings::default()
    };
    let errors = key_errors(settings);
    let expect = |key: &str, parts: &[&str]| {
        let found = errors
            .iter()
            .any(|e| e.starts_with(&format!("{key}: ")) && parts.iter().all(|part| e.contains(part)));
        assert!(found, "no `{key}` error containing {parts:?} in {errors:#?}");
    };
    expect("manifests", &["kubeconfig", "allowed"]);
    expect(
        "node-name",
        &["\"Node_1\"", "DNS-1123 subdomain", "allowed lowercase"],
    );
    expect("cluster-domain", &["\"bad..domain\"", "allowed"]);
    expect(
        "dns-zones",
        &["\"10.0.0.0/12\"", "/12", "multiple of 8", "allowed"],
    );
    expect("dns-zones", &["\"fd00::/62\"", "/62", "multiple of 4", "allowed"]);
    expect("dns-listen", &["\"localhost:53\"", "allowed ADDR:PORT"]);
    expect("namespaces", &["\"Kube-System\"", "allowed DNS-1123 labels"]);
    expect("startup-timeout", &["\"soon\"", "allowed e.g. 5s"]);
    expect("upstreams", &["\"dns.google\"", "allowed IP or IP:PORT"]);
    assert!(errors.contains(&"dns-ttl: 4000 is out of range; allowed 0..=3600".to_owned()));
    expect("cluster-cidr", &["\"10.244.0.0/33\"", "not a CIDR", "allowed"]);
    expect(
        "nodeport-addresses",
        &["\"192.168.1.10\"", "not a CIDR", "allowed"],
    );
    expect("proxy-min-sync-period", &["\"often\"", "allowed e.g."]);
    expect("proxy-full-sync-period", &["zero", "allowed"]);
    // node-name is given (if invalid), so apply itself is not an error here.
    assert_eq!(errors.len(), 14, "{errors:#?}");
}

#[test]
fn proxy_apply_needs_a_node_name_and_dry_run_and_off_do_not() {
    let apply = Settings {
        proxy: Some(ProxyMode::Apply),
        ..Settings::default()
    };
    let errors = key_errors(apply.clone());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("proxy: apply needs node-name") && errors[0].contains("allowed"),
        "{errors:?}"
    );
    let resolv = resolv_conf();
    let with_node = Settings {
        node_name: Some("node-1".into()),
        ..apply
    };
    assert_eq!(
        with_node.validate_with(resolv.path()).unwrap().proxy.mode,
        ProxyMode::Apply
    );
    for mode in [ProxyMode::DryRun, ProxyMode::Off] {
        let settings = Settings {
            proxy: Some(mode),
            ..Settings::default()
        };
        assert_eq!(settings.validate_with(resolv.path()).unwrap().proxy.mode, mode);
    }
}

#[test]
fn a_proxy_needs_endpoint_slices() {
    let settings = Settings {
        proxy: Some(ProxyMode::DryRun),
        noendpoints: Some(true),
        ..Settings::default()
    };
    let errors = key_errors(settings);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("noendpoints: true hides every endpoint") && errors[0].contains("allowed"),
        "{errors:?}"
    );
}

#[test]
fn proxy_settings_round_trip() {
    let resolv = resolv_conf();
    let settings = flags(&[
        "--proxy",
        "apply",
        "--node-name",
        "node-1",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--proxy-min-sync-period",
        "0s",
    ]);
    let config = settings.validate_with(resolv.path()).unwrap();
    assert_eq!(config.proxy.min_sync_period, Duration::ZERO);
    round_trip(&config);
}

#[test]
fn proxy_keys_parse_cidrs_and_durations() {
    let resolv = resolv_conf();
    let settings = flags(&[
        "--cluster-cidr",
        "10.244.0.0/16,fd00:10:244::/56",
        "--nodeport-addresses",
        "192.168.1.7/24",
        "--proxy-min-sync-period",
        "1s",
        "--proxy-full-sync-period",
        "10m",
    ]);
    let proxy = settings.validate_with(resolv.path()).unwrap().proxy;
    let nets = |list: &[&str]| -> Vec<ipnet::IpNet> { list.iter().map(|s| s.parse().unwrap()).collect() };
    assert_eq!(proxy.cluster_cidrs, nets(&["10.244.0.0/16", "fd00:10:244::/56"]));
    // Host bits are dropped, as Kubernetes does.
    assert_eq!(proxy.nodeport_addresses, nets(&["192.168.1.0/24"]));
    assert_eq!(proxy.min_sync_period, Duration::from_secs(1));
    assert_eq!(proxy.full_sync_period, Duration::from_secs(600));
}

#[test]
fn invalid_display_puts_each_error_on_its_own_line() {
    let file = yaml_file("dns-ttl: 4000\nproxy: apply\n");
    let message = check_file(file.path()).unwrap_err().to_string();
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        [
            "dns-ttl: 4000 is out of range; allowed 0..=3600",
            "proxy: apply needs node-name (which endpoints are local to this node); allowed \
             apply with node-name, dry-run, off"
        ]
    );
}

#[test]
fn an_empty_listen_list_is_an_error() {
    let errors = key_errors(Settings {
        dns_listen: Some(vec![]),
        ..Settings::default()
    });
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("dns-listen: is empty; allowed"),
        "{errors:?}"
    );
}

#[test]
fn an_upstream_that_is_svcnet_itself_is_an_error() {
    let settings = Settings {
        dns_listen: strings(&["127.0.0.1:5353"]),
        upstreams: strings(&["127.0.0.1:5353", "10.0.0.2"]),
        ..Settings::default()
    };
    let errors = key_errors(settings);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("upstreams: \"127.0.0.1:5353\" is svcnet's own"),
        "{errors:?}"
    );
}

#[test]
fn zones_are_fqdns_cluster_domain_first_without_repeats() {
    let resolv = resolv_conf();
    let settings = Settings {
        cluster_domain: Some("Example.COM".into()),
        dns_zones: strings(&["example.com", "10.0.0.0/16", "0.10.in-addr.arpa", "IP6.arpa."]),
        ..Settings::default()
    };
    let config = settings.validate_with(resolv.path()).unwrap();
    assert_eq!(
        config.dns.zones,
        ["example.com.", "0.10.in-addr.arpa.", "ip6.arpa."]
    );
}

fn round_trip(config: &Config) {
    let yaml = config.to_yaml();
    let file = yaml_file(&yaml);
    let reloaded = check_file(file.path()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(&reloaded, config, "{yaml}");
}

#[test]
fn to_yaml_round_trips() {
    let resolv = resolv_conf();
    round_trip(&Settings::default().validate_with(resolv.path()).unwrap());

    let everything = Settings {
        manifests: Some("/srv/cluster manifests".into()),
        kubeconfig: None,
        node_name: Some("node-1.example".into()),
        cluster_domain: Some("k8s.example".into()),
        dns_zones: strings(&["10.96.0.0/16", "fd00:77:30::/64"]),
        dns_fallthrough: strings(&["10.0.0.0/8", "ip6.arpa"]),
        dns_listen: strings(&["127.0.0.1:1053", "[::1]:1053"]),
        dns_ttl: Some(0),
        pods: Some(PodsMode::Verified),
        endpoint_pod_names: Some(true),
        ignore_empty_service: Some(true),
        noendpoints: Some(true),
        namespaces: strings(&["default", "kube-system"]),
        startup_timeout: Some("1m 500ms".into()),
        upstreams: strings(&["10.0.0.2", "[fd00::2]:5353"]),
        stub_domains: Some(vec![StubDomainSetting {
            domain: "example.corp".into(),
            upstreams: vec!["10.0.0.53".into(), "[fd00::53]:5353".into()],
        }]),
        forward_max_concurrent: Some(50),
        cache_ttl: Some("0".into()),
        cache_serve_stale: Some("1d 2h".into()),
        dns_workers: Some(2),
        autopath: Some(false),
        health_listen: Some("[::1]:8080".into()),
        ready_listen: Some(String::new()),
        metrics_listen: Some("127.0.0.1:9153".into()),
        lameduck: Some("1s 500ms".into()),
        // noendpoints above hides endpoints from a proxy: only off goes with it.
        proxy: Some(ProxyMode::Off),
        cluster_cidr: strings(&["10.244.0.0/16", "fd00:10:244::/56"]),
        nodeport_addresses: strings(&["192.168.0.0/16"]),
        proxy_min_sync_period: Some("1s 500ms".into()),
        proxy_full_sync_period: Some("2h".into()),
        proxy_sync_period: Some("1m".into()),
        proxy_healthz_listen: Some("127.0.0.1:10256".into()),
    };
    let config = everything.validate_with(resolv.path()).unwrap();
    assert_eq!(config.dns.startup_timeout, Duration::from_millis(60_500));
    round_trip(&config);

    let kubeconfig = Settings {
        kubeconfig: Some(PathBuf::from("/etc/kubernetes/kubelet.conf")),
        upstreams: Some(vec![]),
        ..Settings::default()
    };
    round_trip(&kubeconfig.validate_with(resolv.path()).unwrap());
}

#[test]
fn stub_domains_from_the_file_and_from_repeated_flags() {
    let resolv = resolv_conf();
    let file = yaml_file("stub-domains:\n  example.corp: [10.0.0.53, '10.0.0.54:5353']\n");
    let config = load(Some(file.path()), Settings::default()).unwrap();
    let stub = |domain: &str, upstreams: &[&str]| StubDomain {
        domain: domain.into(),
        upstreams: upstreams.iter().map(|u| sa(u)).collect(),
    };
    assert_eq!(
        config.dns.stub_domains,
        [stub("example.corp.", &["10.0.0.53:53", "10.0.0.54:5353"])]
    );

    let settings = flags(&[
        "--stub-domains",
        "example.corp=10.0.0.53,10.0.0.54:5353",
        "--stub-domains=10.0.0.0/8=10.0.0.53",
    ]);
    let config = settings.validate_with(resolv.path()).unwrap();
    assert_eq!(
        config.dns.stub_domains,
        [
            stub("example.corp.", &["10.0.0.53:53", "10.0.0.54:5353"]),
            stub("10.in-addr.arpa.", &["10.0.0.53:53"]),
        ]
    );
    let err = Cli::try_parse_from(["svcnet", "--stub-domains", "example.corp"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--stub-domains") && err.contains("DOMAIN=IP"),
        "{err}"
    );
}

#[test]
fn forwarding_and_cache_keys_name_themselves_in_errors() {
    let errors = key_errors(Settings {
        stub_domains: Some(vec![StubDomainSetting {
            domain: "svc.cluster.local".into(),
            upstreams: vec!["10.0.0.53".into()],
        }]),
        forward_max_concurrent: Some(0),
        cache_ttl: Some("1500ms".into()),
        cache_serve_stale: Some("later".into()),
        ..Settings::default()
    });
    assert_eq!(
        errors,
        [
            "stub-domains: \"svc.cluster.local\" is inside cluster.local., which svcnet answers \
             itself; allowed domains outside the served zones, or reverse zones",
            "forward-max-concurrent: 0 would refuse every forwarded query; allowed 1 or more",
            "cache-ttl: 1s 500ms is not whole seconds up to 7d; allowed 0 (no cache) to 7d, e.g. 30s, 5m",
            "cache-serve-stale: \"later\" is not a duration; allowed e.g. 5s, 500ms, 1m, 1m 30s",
        ]
    );
    let errors = key_errors(Settings {
        cache_ttl: Some("8d".into()),
        cache_serve_stale: Some("8d".into()),
        ..Settings::default()
    });
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("cache-ttl: 8days is not whole seconds up to 7d"));
    assert!(errors[1].starts_with("cache-serve-stale: 8days is more than 7d"));
}

#[test]
fn fallthrough_takes_reverse_zones_only() {
    let resolv = resolv_conf();
    let config = flags(&["--dns-fallthrough", "10.0.0.0/8,D.F.ip6.arpa"])
        .validate_with(resolv.path())
        .unwrap();
    assert_eq!(config.dns.fallthrough, ["10.in-addr.arpa.", "d.f.ip6.arpa."]);
    let config = flags(&["--dns-fallthrough="])
        .validate_with(resolv.path())
        .unwrap();
    assert_eq!(config.dns.fallthrough, Vec::<String>::new());
    assert_eq!(
        key_errors(flags(&["--dns-fallthrough", "cluster.local"])),
        [
            "dns-fallthrough: \"cluster.local\" is not a reverse zone; allowed in-addr.arpa, \
          ip6.arpa, zones below them or CIDRs (the cluster's own names never fall through)"
        ]
    );
}

#[test]
fn a_zero_cache_ttl_turns_the_cache_off() {
    let resolv = resolv_conf();
    let config = flags(&["--cache-ttl", "0", "--cache-serve-stale=0s"])
        .validate_with(resolv.path())
        .unwrap();
    assert_eq!(config.dns.cache_ttl, Duration::ZERO);
    assert_eq!(config.dns.cache_serve_stale, Duration::ZERO);
}

#[test]
fn admin_endpoints_are_coredns_ports_off_with_manifests_and_empty_disables() {
    let resolv = resolv_conf();
    let config = flags(&["--manifests", "/m"])
        .validate_with(resolv.path())
        .unwrap();
    assert_eq!(
        config.admin,
        AdminConfig {
            health_listen: None,
            ready_listen: None,
            metrics_listen: None,
            lameduck: Duration::ZERO,
        }
    );
    let config = flags(&[
        "--manifests=/m",
        "--health-listen=127.0.0.1:18080",
        "--metrics-listen",
        "[::1]:19153",
        "--lameduck=2s",
    ])
    .validate_with(resolv.path())
    .unwrap();
    assert_eq!(config.admin.health_listen, Some(sa("127.0.0.1:18080")));
    assert_eq!(config.admin.ready_listen, None);
    assert_eq!(config.admin.metrics_listen, Some(sa("[::1]:19153")));
    assert_eq!(config.admin.lameduck, Duration::from_secs(2));
    let config = flags(&["--ready-listen="]).validate_with(resolv.path()).unwrap();
    assert_eq!(config.admin.ready_listen, None);
    assert_eq!(config.admin.health_listen, Some(sa("0.0.0.0:8080")));
}

#[test]
fn admin_keys_name_themselves_in_errors() {
    assert_eq!(
        key_errors(flags(&[
            "--health-listen=:8080",
            "--ready-listen=127.0.0.1:9153",
            "--metrics-listen=127.0.0.1:9153",
            "--lameduck=soon",
            "--dns-workers=1000",
        ])),
        [
            "dns-workers: 1000 is out of range; allowed 0 (one per CPU) to 256",
            "health-listen: \":8080\" is not an address; allowed ADDR:PORT, e.g. 127.0.0.1:5353 \
             or [::]:53 or empty to disable",
            "lameduck: \"soon\" is not a duration; allowed e.g. 5s, 500ms, 1m, 1m 30s",
            "metrics-listen: 127.0.0.1:9153 is also ready-listen; allowed ADDR:PORT, e.g. \
             127.0.0.1:5353 or [::]:53 not used by another endpoint",
        ]
    );
}

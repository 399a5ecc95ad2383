//! The command line as users type it: `check-config` on good and bad files.

use std::process::Command;

fn check_config(yaml: &str) -> (bool, String, String) {
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(file.path(), yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args(["check-config", &file.path().display().to_string()])
        .output()
        .expect("run svcnet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let (ok, stdout, stderr) = check_config("manifests: examples/cluster\ndns-ttl: 5\npods: verified\n");
    assert!(ok, "{stderr}");
    // Given keys and kubeadm defaults both appear, in the file's own syntax.
    assert!(stdout.contains("dns-ttl: 5"), "{stdout}");
    assert!(stdout.contains("pods: verified"), "{stdout}");
    assert!(stdout.contains("cluster-domain: cluster.local"), "{stdout}");
    assert!(
        stdout.contains("127.0.0.1:5353"),
        "the manifests default listen address: {stdout}"
    );
}

#[test]
fn check_config_names_every_bad_key() {
    let (ok, _, stderr) = check_config("dns-ttl: 4000\npods: sometimes\n");
    assert!(!ok);
    assert!(stderr.contains("pods"), "{stderr}");
    let (ok, _, stderr) = check_config("dns-ttl: 4000\n");
    assert!(!ok);
    assert!(stderr.contains("dns-ttl") && stderr.contains("3600"), "{stderr}");
    let (ok, _, stderr) = check_config("colour: blue\n");
    assert!(!ok);
    assert!(
        stderr.contains("colour") && stderr.contains("cluster-domain"),
        "unknown key and the allowed ones: {stderr}"
    );
}

fn svcnet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args(args)
        .env_remove("NODE_NAME")
        .output()
        .expect("run svcnet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn render_rules_prints_the_full_ruleset_of_the_manifests() {
    let (ok, stdout, stderr) = svcnet(&[
        "render-rules",
        "--manifests",
        "examples/cluster",
        "--node-name",
        "node-1",
        "--cluster-cidr",
        "10.244.0.0/16",
    ]);
    assert!(ok, "{stderr}");
    // A full replace of both tables, with the web Service's two green endpoints behind its
    // ClusterIP.
    assert!(
        stdout.starts_with("add table ip svcnet\ndelete table ip svcnet\n"),
        "{stdout}"
    );
    assert!(stdout.contains("add table ip6 svcnet\n"), "{stdout}");
    assert!(
        stdout.contains("\t10.96.0.80 . tcp . 80 comment \"shop/web:http\" : goto lb-tcp-2,\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\t10.244.0.0/16,\n"), "{stdout}");
}

#[test]
fn the_proxy_needs_a_node_name_to_apply_or_render() {
    let (ok, _, stderr) = svcnet(&["render-rules", "--manifests", "examples/cluster"]);
    assert!(!ok);
    assert!(stderr.contains("--node-name"), "{stderr}");
    let (ok, _, stderr) = svcnet(&["run", "--manifests", "examples/cluster", "--proxy", "apply"]);
    assert!(!ok);
    assert!(stderr.contains("proxy: apply needs node-name"), "{stderr}");
}

#[test]
fn resolv_conf_prints_what_kubelet_writes() {
    let pod = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(
        pod.path(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  containers: [{name: c, image: x}]\n  dnsConfig:\n    searches: [corp.example]\n    options: [{name: ndots, value: \"2\"}]\n",
    )
    .expect("write pod");
    let node = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(
        node.path(),
        "nameserver 192.0.2.53\nsearch node.example\noptions timeout:1\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args(["resolv-conf", "--pod", &pod.path().display().to_string()])
        .args([
            "--cluster-dns",
            "10.96.0.10",
            "--node-resolv-conf",
            &node.path().display().to_string(),
        ])
        .output()
        .expect("run svcnet");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ClusterFirst: the cluster's search domains, the node's, then the Pod's; ndots:5 replaced
    // by the Pod's option; the node's nameserver and options do not carry over.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "search shop.svc.cluster.local svc.cluster.local cluster.local node.example corp.example\n\
         nameserver 10.96.0.10\noptions ndots:2\n"
    );
}

#[test]
fn resolve_shows_every_query_of_the_search_walk() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let svcnet =
        svcnet_integration::Svcnet::start_manifests(env!("CARGO_BIN_EXE_svcnet"), &dir, &["--upstreams="]);
    let resolve = |name: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_svcnet"))
            .args([
                "resolve",
                name,
                "--namespace",
                "shop",
                "--node-resolv-conf",
                "/dev/null",
            ])
            .args(["--server", &svcnet.dns.to_string()])
            .args(extra)
            .output()
            .expect("run svcnet resolve")
    };
    let found = resolve("mysql-read", &[]);
    let stdout = String::from_utf8_lossy(&found.stdout);
    assert!(found.status.success(), "{stdout}");
    // Found under the first search domain: one A and one AAAA query.
    assert!(stdout.contains("=> 10.96.33.6 (2 queries)"), "{stdout}");

    let other_namespace = resolve("grafana.monitoring", &[]);
    let stdout = String::from_utf8_lossy(&other_namespace.stdout);
    // NXDOMAIN under shop.svc.cluster.local, found under svc.cluster.local.
    assert!(
        stdout.contains("grafana.monitoring.shop.svc.cluster.local.  NXDOMAIN"),
        "{stdout}"
    );
    assert!(stdout.contains("=> 10.96.30.30 (4 queries)"), "{stdout}");

    let missing = resolve("mysql-2.mysql.shop.svc.cluster.local", &["--musl"]);
    assert_eq!(
        missing.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&missing.stdout)
    );
}

/// The configuration shipped in deploy/svcnet.yaml's ConfigMap is valid.
#[test]
fn the_deployed_configuration_checks() {
    let manifest =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/svcnet.yaml"))
            .expect("deploy/svcnet.yaml");
    // The block scalar under `config.yaml: |`, indented four spaces.
    let config: String = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("config.yaml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(config.contains("cluster-domain"), "ConfigMap block not found");
    let (ok, stdout, stderr) = check_config(&config);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("dns-ttl: 30"), "{stdout}");
}

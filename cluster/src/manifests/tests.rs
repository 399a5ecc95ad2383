//! Loading directories of manifests, and watching one.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tempfile::TempDir;

use super::{LoadReport, ManifestError, ManifestSource};
use crate::{ClusterState, PodScope, Snapshot, SourceOptions, channel, model::ServiceAddressing};

fn all_pods() -> SourceOptions {
    SourceOptions {
        pods: PodScope::All,
        endpoint_slices: true,
    }
}

/// A temporary directory holding `files` (relative paths, parents created).
fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent directory");
    }
    fs::write(path, text).expect("write manifest");
}

fn load_with(dir: &Path, options: SourceOptions) -> (Snapshot, LoadReport) {
    let mut state = ClusterState::default();
    let report = ManifestSource::new(dir, options)
        .load(&mut state)
        .expect("load manifests");
    (state.snapshot(true), report)
}

fn load(dir: &Path) -> (Snapshot, LoadReport) {
    load_with(dir, all_pods())
}

fn namespaces(snapshot: &Snapshot) -> Vec<&str> {
    let mut names: Vec<&str> = snapshot.namespaces().map(|ns| &*ns.namespace.name).collect();
    names.sort_unstable();
    names
}

fn services(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snapshot.services().map(|s| s.service.key.to_string()).collect();
    names.sort_unstable();
    names
}

fn pods(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<String> = snapshot.pods().iter().map(|p| p.key.to_string()).collect();
    names.sort_unstable();
    names
}

fn cluster_ips(snapshot: &Snapshot, namespace: &str, name: &str) -> Vec<IpAddr> {
    match snapshot.service(namespace, name).map(|s| &s.service.addressing) {
        Some(ServiceAddressing::ClusterIp(ips)) => ips.clone(),
        other => panic!("{namespace}/{name} has no cluster IPs: {other:?}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

fn service_yaml(name: &str, cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  clusterIP: {cluster_ip}
  ports: [{{port: 80}}]
"
    )
}

const WEB_AND_PODS: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec: {nodeName: node-1, containers: []}
status:
  podIP: 10.0.0.1
  conditions: [{type: Ready, status: 'True'}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec: {nodeName: node-2, containers: []}
status:
  podIP: 10.0.0.2
  conditions: [{type: Ready, status: 'False'}]
";

#[test]
fn multi_document_yaml() {
    let dir = dir_with(&[(
        "all.yaml",
        "---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
# an empty document
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec: {replicas: 3}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop}
status: {podIP: 10.0.0.1}
",
    )]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(report.errors, []);
    assert_eq!((report.files, report.objects), (1, 3));
    let shop = snapshot.namespace("shop").expect("namespace shop");
    assert_eq!(shop.namespace.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(cluster_ips(&snapshot, "shop", "web"), [ip("10.96.0.10")]);
    assert_eq!(pods(&snapshot), ["shop/web-a"]);
    assert_eq!(snapshot.pods_by_ip(ip("10.0.0.1")).len(), 1);
}

#[test]
fn json_file() {
    let dir = dir_with(&[(
        "web.json",
        r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "web", "namespace": "shop"},
  "spec": {"clusterIPs": ["10.96.0.10", "fd00::10"], "ports": [{"port": 80}]}
}"#,
    )]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(report.errors, []);
    assert_eq!(report.objects, 1);
    assert_eq!(
        cluster_ips(&snapshot, "shop", "web"),
        [ip("10.96.0.10"), ip("fd00::10")]
    );
}

#[test]
fn kind_list_items_are_objects() {
    let dir = dir_with(&[
        (
            "list.yaml",
            "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
  spec: {clusterIP: 10.96.0.1}
- apiVersion: v1
  kind: List
  items:
  - apiVersion: v1
    kind: Service
    metadata: {name: b}
    spec: {clusterIP: 10.96.0.2}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: ignored}
",
        ),
        (
            "list.json",
            r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"}, "spec": {"clusterIP": "10.96.0.3"}}
]}"#,
        ),
        ("empty-list.yaml", "apiVersion: v1\nkind: List\nitems: []\n"),
    ]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(report.errors, []);
    assert_eq!(report.objects, 3);
    assert_eq!(services(&snapshot), ["default/a", "default/b", "default/c"]);
}

#[test]
fn unparsable_files_are_reported_with_path_and_line_and_the_rest_loads() {
    let dir = dir_with(&[
        // Line 3 puts a mapping where a plain value is.
        ("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: name: web\n"),
        // Line 3 has a second comma.
        (
            "bad.json",
            "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Service\",,\n}\n",
        ),
        ("good.yaml", &service_yaml("good", "10.96.0.1")),
    ]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(services(&snapshot), ["default/good"]);
    assert_eq!((report.files, report.objects), (3, 1));
    let errors: Vec<(&str, Option<u64>)> = report
        .errors
        .iter()
        .map(|e| (file_name(&e.path), e.line))
        .collect();
    assert_eq!(errors, [("bad.json", Some(3)), ("bad.yaml", Some(3))]);
    let shown = report.errors[1].to_string();
    let expected_prefix = format!("{}:3: ", dir.path().join("bad.yaml").display());
    assert!(shown.starts_with(&expected_prefix), "{shown}");
}

#[test]
fn objects_that_do_not_convert_are_skipped() {
    let dir = dir_with(&[(
        "services.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: good}
spec: {clusterIP: 10.96.0.1}
---
apiVersion: v1
kind: Service
metadata: {name: bad-ip}
spec: {clusterIP: not-an-ip}
---
apiVersion: v1
kind: Service
metadata: {name: bad-type}
spec: {ports: [{port: eighty}]}
---
just a string
---
apiVersion: v1
kind: List
items: {not: a sequence}
",
    )]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(services(&snapshot), ["default/good"]);
    assert_eq!(report.objects, 1);
    // Each error points at the line where its document starts.
    let errors: Vec<(Option<u64>, bool)> = report
        .errors
        .iter()
        .map(|e| (e.line, file_name(&e.path) == "services.yaml"))
        .collect();
    assert_eq!(
        errors,
        [
            (Some(6), true),
            (Some(11), true),
            (Some(16), true),
            (Some(18), true)
        ]
    );
    assert!(
        report.errors[0].message.contains("not-an-ip"),
        "{}",
        report.errors[0]
    );
    assert!(
        report.errors[1].message.contains("bad-type"),
        "{}",
        report.errors[1]
    );
}

#[test]
fn namespaces_default_and_implicit() {
    let dir = dir_with(&[(
        "objects.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: worker, namespace: jobs}
status: {podIP: 10.0.0.1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: external, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.1]}]
---
apiVersion: v1
kind: Namespace
metadata: {name: quiet}
",
    )]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(report.errors, []);
    assert_eq!(services(&snapshot), ["default/web"]);
    assert_eq!(namespaces(&snapshot), ["default", "external", "jobs", "quiet"]);

    let empty = dir_with(&[]);
    let (snapshot, report) = load(empty.path());
    assert_eq!((report.files, report.objects), (0, 0));
    assert_eq!(namespaces(&snapshot), ["default"]);
}

#[test]
fn selector_services_get_derived_slices() {
    let dir = dir_with(&[("web.yaml", WEB_AND_PODS)]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(report.errors, []);
    // Derived slices are not objects read from the files.
    assert_eq!(report.objects, 3);
    let web = snapshot.service("shop", "web").expect("service web");
    assert_eq!(web.slices.len(), 1);
    let slice = &web.slices[0];
    assert_eq!(&*slice.key.name, "web-ipv4");
    assert_eq!(&*slice.service_name, "web");
    assert_eq!(slice.ports.len(), 1);
    assert_eq!(slice.ports[0].name.as_deref(), Some("http"));
    assert_eq!(slice.ports[0].port, Some(8080));
    let endpoints: Vec<(Vec<IpAddr>, bool, Option<&str>)> = slice
        .endpoints
        .iter()
        .map(|e| (e.addresses.clone(), e.ready, e.pod_name.as_deref()))
        .collect();
    assert_eq!(
        endpoints,
        [
            (vec![ip("10.0.0.1")], true, Some("web-a")),
            (vec![ip("10.0.0.2")], false, Some("web-b")),
        ]
    );
}

#[test]
fn written_slices_replace_derivation() {
    let written = "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-manual, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9999}]
endpoints: [{addresses: [10.0.0.9]}]
";
    let dir = dir_with(&[("web.yaml", WEB_AND_PODS), ("slice.yaml", written)]);
    let (snapshot, _) = load(dir.path());

    let web = snapshot.service("shop", "web").expect("service web");
    let names: Vec<&str> = web.slices.iter().map(|s| &*s.key.name).collect();
    assert_eq!(names, ["web-manual"]);
}

#[test]
fn noendpoints_means_no_slices_at_all() {
    let written = "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: shop, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
endpoints: [{addresses: [not-an-ip]}]
";
    let dir = dir_with(&[("web.yaml", WEB_AND_PODS), ("slice.yaml", written)]);
    let options = SourceOptions {
        pods: PodScope::All,
        endpoint_slices: false,
    };
    let (snapshot, report) = load_with(dir.path(), options);

    assert_eq!(report.errors, []);
    assert!(snapshot.services().all(|s| s.slices.is_empty()));
    assert!(snapshot.endpoints_by_ip(ip("10.0.0.1")).is_empty());
}

#[test]
fn pod_scope_limits_the_state_but_not_derivation() {
    let dir = dir_with(&[("web.yaml", WEB_AND_PODS)]);
    let node = SourceOptions {
        pods: PodScope::Node("node-1".to_owned()),
        endpoint_slices: true,
    };
    let (snapshot, _) = load_with(dir.path(), node);
    assert_eq!(pods(&snapshot), ["shop/web-a"]);
    let web = snapshot.service("shop", "web").expect("service web");
    assert_eq!(web.endpoints().count(), 2);

    let none = SourceOptions {
        pods: PodScope::None,
        endpoint_slices: true,
    };
    let (snapshot, _) = load_with(dir.path(), none);
    assert!(pods(&snapshot).is_empty());
    assert_eq!(namespaces(&snapshot), ["default", "shop"]);
}

#[test]
fn walks_subdirectories_and_skips_hidden_and_other_files() {
    let dir = dir_with(&[
        ("team/a/svc.yml", &service_yaml("nested", "10.96.0.1")),
        ("UPPER.YAML", &service_yaml("upper", "10.96.0.2")),
        (".hidden.yaml", &service_yaml("hidden", "10.96.0.3")),
        (".git/config.yaml", &service_yaml("in-hidden-dir", "10.96.0.4")),
        ("notes.txt", &service_yaml("text", "10.96.0.5")),
        ("web.yaml~", &service_yaml("backup", "10.96.0.6")),
    ]);
    let (snapshot, report) = load(dir.path());

    assert_eq!(report.files, 2);
    assert_eq!(services(&snapshot), ["default/nested", "default/upper"]);
}

#[test]
fn configmap_volume_layout_loads_each_key_once() {
    // What the kubelet writes for a ConfigMap volume: the data in a timestamped directory,
    // `..data` linking to it, and one link per key through `..data`.
    let dir = dir_with(&[(
        "..2025_01_01_00_00_00.1/web.yaml",
        &service_yaml("web", "10.96.0.1"),
    )]);
    let root = dir.path();
    std::os::unix::fs::symlink("..2025_01_01_00_00_00.1", root.join("..data")).expect("..data link");
    std::os::unix::fs::symlink("..data/web.yaml", root.join("web.yaml")).expect("key link");
    let (snapshot, report) = load(root);

    assert_eq!(report.errors, []);
    assert_eq!((report.files, report.objects), (1, 1));
    assert_eq!(services(&snapshot), ["default/web"]);
}

#[test]
fn a_key_defined_twice_keeps_the_later_file() {
    let dir = dir_with(&[
        ("a.yaml", &service_yaml("web", "10.96.0.1")),
        ("b.yaml", &service_yaml("web", "10.96.0.2")),
    ]);
    let (snapshot, _) = load(dir.path());
    assert_eq!(cluster_ips(&snapshot, "default", "web"), [ip("10.96.0.2")]);
}

#[test]
fn missing_or_non_directory_is_an_error() {
    let dir = dir_with(&[("file.yaml", "")]);
    let mut state = ClusterState::default();

    let missing = ManifestSource::new(dir.path().join("missing"), all_pods()).load(&mut state);
    assert!(matches!(missing, Err(ManifestError::Dir { .. })), "{missing:?}");
    let file = ManifestSource::new(dir.path().join("file.yaml"), all_pods()).load(&mut state);
    assert!(
        matches!(file, Err(ManifestError::NotADirectory { .. })),
        "{file:?}"
    );
}

#[test]
fn reloading_unchanged_files_keeps_the_serial() {
    let dir = dir_with(&[("web.yaml", WEB_AND_PODS)]);
    let source = ManifestSource::new(dir.path(), all_pods());
    let mut state = ClusterState::default();

    source.load(&mut state).expect("first load");
    let first = state.serial();
    assert_ne!(first, 0);
    source.load(&mut state).expect("second load");
    assert_eq!(state.serial(), first);

    write(dir.path(), "other.yaml", &service_yaml("other", "10.96.0.2"));
    source.load(&mut state).expect("third load");
    assert!(state.serial() > first);
}

#[tokio::test]
async fn run_republishes_after_an_edit() {
    let dir = dir_with(&[("web.yaml", &service_yaml("web", "10.96.0.1"))]);
    let (publisher, mut reader) = channel();
    let source = ManifestSource::new(dir.path(), all_pods());
    let task = tokio::spawn(source.run(publisher));

    assert!(reader.wait_synced(Duration::from_secs(5)).await, "first snapshot");
    assert_eq!(cluster_ips(&reader.load(), "default", "web"), [ip("10.96.0.1")]);

    write(dir.path(), "web.yaml", &service_yaml("web", "10.96.0.2"));
    let changed = tokio::time::timeout(Duration::from_secs(1), reader.changed()).await;
    assert_eq!(changed, Ok(true), "no snapshot within a second of the edit");
    let snapshot = reader.load_full();
    assert!(snapshot.synced);
    assert_eq!(cluster_ips(&snapshot, "default", "web"), [ip("10.96.0.2")]);

    fs::remove_file(dir.path().join("web.yaml")).expect("remove manifest");
    let changed = tokio::time::timeout(Duration::from_secs(1), reader.changed()).await;
    assert_eq!(changed, Ok(true), "no snapshot within a second of the removal");
    assert_eq!(services(&reader.load()), Vec::<String>::new());

    task.abort();
}

#[tokio::test]
async fn run_fails_without_the_directory() {
    let dir = dir_with(&[]);
    let (publisher, _reader) = channel();
    let missing: PathBuf = dir.path().join("missing");
    let result = ManifestSource::new(missing, all_pods()).run(publisher).await;
    assert!(matches!(result, Err(ManifestError::Dir { .. })), "{result:?}");
}

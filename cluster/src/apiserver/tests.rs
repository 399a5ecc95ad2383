use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, stream};
use kube::{core::Status, runtime::watcher::Event};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{watched::Update, *};
use crate::{Snapshot, convert::ConvertError, model::ServiceAddressing};

// ---- objects, as the API server sends them ----

fn from_json<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("test object matches its schema")
}

fn namespace(name: &str) -> PartialObjectMeta<core::Namespace> {
    from_json(json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
    }))
}

fn service(name: &str, cluster_ip: &str) -> core::Service {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    }))
}

/// A Service the API server would never have accepted: an unknown type.
fn malformed_service(name: &str) -> core::Service {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"type": "Bogus", "clusterIP": "10.96.0.99"},
    }))
}

fn slice(name: &str, service_label: Option<&str>, address: &str) -> discovery::EndpointSlice {
    let labels = service_label.map_or(json!({}), |s| json!({"kubernetes.io/service-name": s}));
    from_json(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": name, "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }))
}

fn pod(name: &str, ip: &str) -> core::Pod {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app"}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }))
}

// ---- events ----

/// A complete list of `objects`, as the watcher reports it.
fn list<K: Watchable>(objects: impl IntoIterator<Item = K>) -> Vec<Update> {
    let mut events = vec![K::update(Event::Init)];
    events.extend(objects.into_iter().map(|o| K::update(Event::InitApply(o))));
    events.push(K::update(Event::InitDone));
    events
}

fn apply<K: Watchable>(object: K) -> Update {
    K::update(Event::Apply(object))
}

fn delete<K: Watchable>(object: K) -> Update {
    K::update(Event::Delete(object))
}

fn all_kinds() -> SourceOptions {
    SourceOptions {
        pods: PodScope::All,
        endpoint_slices: true,
    }
}

/// Feeds `events` in order; panics on a rejected object. Returns whether anything changed.
fn feed(watched: &mut Watched, events: impl IntoIterator<Item = Update>) -> bool {
    events.into_iter().fold(false, |changed, event| {
        watched.apply(event).expect("well-formed object") | changed
    })
}

/// A `Watched` over every kind, synced with empty lists of everything but `services`.
fn synced_with(services: Vec<core::Service>) -> Watched {
    let mut watched = Watched::new(&all_kinds());
    feed(&mut watched, list::<PartialObjectMeta<core::Namespace>>([]));
    feed(&mut watched, list(services));
    feed(&mut watched, list::<discovery::EndpointSlice>([]));
    feed(&mut watched, list::<core::Pod>([]));
    assert!(watched.synced());
    watched
}

fn service_names(snapshot: &Snapshot) -> Vec<String> {
    let mut names: Vec<_> = snapshot.services().map(|s| s.service.key.to_string()).collect();
    names.sort();
    names
}

fn cluster_ip(snapshot: &Snapshot, name: &str) -> Option<ServiceAddressing> {
    snapshot
        .service("default", name)
        .map(|s| s.service.addressing.clone())
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> ServiceAddressing {
    ServiceAddressing::ClusterIp(vec![IpAddr::V4(Ipv4Addr::new(a, b, c, d))])
}

// ---- Watched: the event state machine ----

#[test]
fn relist_removes_objects_that_vanished() {
    let mut watched = synced_with(vec![service("a", "10.96.0.1"), service("b", "10.96.0.2")]);
    assert_eq!(
        service_names(&watched.snapshot(false)),
        ["default/a", "default/b"]
    );

    // After a disconnect the watcher lists again; `b` was deleted meanwhile.
    let mut relist = list([service("a", "10.96.0.1")]).into_iter();
    let done = relist.next_back().expect("list ends with InitDone");
    assert!(
        !feed(&mut watched, relist),
        "a relist in progress changes nothing"
    );
    assert_eq!(
        service_names(&watched.snapshot(false)),
        ["default/a", "default/b"]
    );

    assert!(feed(&mut watched, [done]));
    assert_eq!(service_names(&watched.snapshot(true)), ["default/a"]);
}

#[test]
fn relist_that_starts_over_forgets_the_broken_attempt() {
    let mut watched = synced_with(vec![]);
    feed(
        &mut watched,
        [
            Update::Service(Event::Init),
            apply_init(service("a", "10.96.0.1")),
            // The next page failed; the watcher starts the list again.
            Update::Service(Event::Init),
            apply_init(service("b", "10.96.0.2")),
            Update::Service(Event::InitDone),
        ],
    );
    assert_eq!(service_names(&watched.snapshot(true)), ["default/b"]);
}

fn apply_init<K: Watchable>(object: K) -> Update {
    K::update(Event::InitApply(object))
}

#[test]
fn identical_relist_changes_nothing() {
    let mut watched = synced_with(vec![service("a", "10.96.0.1")]);
    assert!(!feed(&mut watched, list([service("a", "10.96.0.1")])));
}

#[test]
fn apply_and_delete() {
    let mut watched = synced_with(vec![]);
    assert!(feed(&mut watched, [apply(service("a", "10.96.0.1"))]));
    assert!(
        !feed(&mut watched, [apply(service("a", "10.96.0.1"))]),
        "same object again"
    );
    assert!(feed(&mut watched, [apply(service("a", "10.96.0.7"))]));
    assert_eq!(cluster_ip(&watched.snapshot(true), "a"), Some(v4(10, 96, 0, 7)));

    assert!(feed(&mut watched, [delete(service("a", "10.96.0.7"))]));
    assert!(
        !feed(&mut watched, [delete(service("a", "10.96.0.7"))]),
        "already gone"
    );
    assert!(service_names(&watched.snapshot(true)).is_empty());
}

#[test]
fn every_kind_lands_in_the_snapshot() {
    let mut watched = Watched::new(&all_kinds());
    feed(&mut watched, list([namespace("default")]));
    feed(&mut watched, list([service("web", "10.96.0.1")]));
    feed(&mut watched, list([slice("web-1", Some("web"), "10.1.0.5")]));
    feed(&mut watched, list([pod("web-0", "10.1.0.5")]));
    let snapshot = watched.snapshot(true);

    let ns = snapshot.namespace("default").expect("namespace listed");
    assert_eq!(ns.namespace.labels["kubernetes.io/metadata.name"], "default");
    let web = snapshot.service("default", "web").expect("service listed");
    assert_eq!(web.slices.len(), 1);
    let ip: IpAddr = "10.1.0.5".parse().expect("literal IP");
    assert_eq!(snapshot.pods_by_ip(ip).len(), 1);
    assert_eq!(snapshot.endpoints_by_ip(ip).len(), 1);
}

#[test]
fn malformed_apply_keeps_the_previous_version() {
    let mut watched = synced_with(vec![service("a", "10.96.0.1"), service("b", "10.96.0.2")]);

    let error = watched
        .apply(apply(malformed_service("a")))
        .expect_err("type Bogus is rejected");
    assert!(
        matches!(&error, ConvertError::InvalidField { field, .. } if field == "spec.type"),
        "{error}"
    );
    let snapshot = watched.snapshot(false);
    assert_eq!(cluster_ip(&snapshot, "a"), Some(v4(10, 96, 0, 1)));
    assert_eq!(cluster_ip(&snapshot, "b"), Some(v4(10, 96, 0, 2)));
}

#[test]
fn malformed_object_in_a_relist_keeps_its_last_good_version() {
    let mut watched = synced_with(vec![service("a", "10.96.0.1"), service("b", "10.96.0.2")]);
    let results: Vec<_> = list([
        malformed_service("a"),
        service("b", "10.96.0.2"),
        malformed_service("new"),
    ])
    .into_iter()
    .map(|event| watched.apply(event))
    .collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);

    let snapshot = watched.snapshot(false);
    assert_eq!(service_names(&snapshot), ["default/a", "default/b"]);
    assert_eq!(cluster_ip(&snapshot, "a"), Some(v4(10, 96, 0, 1)));
}

#[test]
fn delete_does_not_need_a_well_formed_object() {
    let mut watched = synced_with(vec![service("a", "10.96.0.1")]);
    assert!(feed(&mut watched, [delete(malformed_service("a"))]));
    assert!(service_names(&watched.snapshot(true)).is_empty());
}

#[test]
fn slice_that_loses_its_service_label_is_removed() {
    let mut watched = synced_with(vec![service("web", "10.96.0.1")]);
    assert!(feed(
        &mut watched,
        [apply(slice("web-1", Some("web"), "10.1.0.5"))]
    ));
    let ip: IpAddr = "10.1.0.5".parse().expect("literal IP");
    assert_eq!(watched.snapshot(true).endpoints_by_ip(ip).len(), 1);

    assert!(feed(&mut watched, [apply(slice("web-1", None, "10.1.0.5"))]));
    assert!(watched.snapshot(true).endpoints_by_ip(ip).is_empty());
}

#[test]
fn synced_once_every_watched_kind_listed() {
    let mut watched = Watched::new(&all_kinds());
    feed(&mut watched, list::<PartialObjectMeta<core::Namespace>>([]));
    feed(&mut watched, list::<core::Service>([]));
    // Pods are listed before slices finish: still not synced.
    feed(&mut watched, list::<core::Pod>([]));
    feed(&mut watched, [Update::EndpointSlice(Event::Init)]);
    assert!(!watched.synced());
    assert!(!watched.snapshot(false).synced);

    feed(&mut watched, [Update::EndpointSlice(Event::InitDone)]);
    assert!(watched.synced());
    assert!(watched.snapshot(false).synced);

    // A later relist serves the previous state meanwhile, and stays synced.
    feed(&mut watched, [Update::Service(Event::Init)]);
    assert!(watched.synced());
}

#[test]
fn kinds_not_watched_are_not_waited_for() {
    let mut watched = Watched::new(&SourceOptions {
        pods: PodScope::None,
        endpoint_slices: false,
    });
    feed(&mut watched, list::<PartialObjectMeta<core::Namespace>>([]));
    assert!(!watched.synced());
    feed(&mut watched, list::<core::Service>([]));
    assert!(watched.synced());
}

// ---- Driver: batching, publishing, reachability ----

/// Events that arrive `delay` after the stream is first polled for them.
fn after(delay: Duration, items: Vec<Item>) -> impl Stream<Item = Item> {
    stream::once(async move {
        tokio::time::sleep(delay).await;
        stream::iter(items)
    })
    .flatten()
}

/// Runs a driver over `events` until they end; returns every snapshot it published.
async fn drive(metrics: &SourceMetrics, events: impl Stream<Item = Item> + Send + 'static) -> Vec<Snapshot> {
    let mut published = Vec::new();
    Driver::new(Watched::new(&all_kinds()), metrics.clone(), None, |snapshot| {
        published.push(snapshot)
    })
    .run(events.boxed())
    .await;
    published
}

/// Empty lists of every kind.
fn empty_lists() -> Vec<Item> {
    [
        list::<PartialObjectMeta<core::Namespace>>([]),
        list::<core::Service>([]),
        list::<discovery::EndpointSlice>([]),
        list::<core::Pod>([]),
    ]
    .into_iter()
    .flatten()
    .map(Ok)
    .collect()
}

fn unreachable(kind: Kind) -> Item {
    let refused = kube::Error::Service("tcp connect error: Connection refused (os error 111)".into());
    Err(WatchFailure {
        kind,
        error: watcher::Error::InitialListFailed(refused),
    })
}

fn answered(kind: Kind, code: u16, reason: &str) -> Item {
    let status = Status::failure("the API server said no", reason).with_code(code);
    Err(WatchFailure {
        kind,
        error: watcher::Error::WatchFailed(kube::Error::Api(Box::new(status))),
    })
}

fn render(metrics: &SourceMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String");
    text
}

#[tokio::test(start_paused = true)]
async fn burst_of_events_is_published_as_one_snapshot() {
    let services = |range: std::ops::Range<u8>| -> Vec<core::Service> {
        range
            .flat_map(|i| (0..=9).map(move |j| service(&format!("svc-{i}-{j}"), &format!("10.96.{i}.{j}"))))
            .collect()
    };
    let mut burst = empty_lists();
    burst.extend(services(0..100).into_iter().map(|s| Ok(apply(s))));
    let deletes = services(0..50).into_iter().map(|s| Ok(delete(s))).collect();

    let published = drive(
        &SourceMetrics::default(),
        stream::iter(burst).chain(after(Duration::from_secs(1), deletes)),
    )
    .await;

    assert_eq!(published.len(), 2, "one snapshot per burst");
    assert!(published[0].synced);
    assert_eq!(published[0].services().count(), 1000);
    assert_eq!(published[1].services().count(), 500);
    assert!(published[1].serial > published[0].serial);
}

#[tokio::test(start_paused = true)]
async fn first_synced_snapshot_is_published_even_when_empty() {
    let published = drive(&SourceMetrics::default(), stream::iter(empty_lists())).await;
    assert_eq!(published.len(), 1);
    assert!(published[0].synced);
}

#[tokio::test(start_paused = true)]
async fn changes_before_sync_are_published_unsynced() {
    let events = list([service("a", "10.96.0.1")]).into_iter().map(Ok);
    let published = drive(&SourceMetrics::default(), stream::iter(events)).await;
    assert_eq!(published.len(), 1);
    assert!(!published[0].synced);
    assert_eq!(service_names(&published[0]), ["default/a"]);
}

#[tokio::test(start_paused = true)]
async fn malformed_object_is_logged_and_counted() {
    let logs = Logs::capture();
    let metrics = SourceMetrics::new(Kind::watched(&all_kinds()));
    let mut events = empty_lists();
    events.push(Ok(apply(malformed_service("bad"))));
    events.push(Ok(apply(service("good", "10.96.0.1"))));

    let published = drive(&metrics, stream::iter(events)).await;

    assert_eq!(service_names(&published[0]), ["default/good"]);
    let text = render(&metrics);
    assert!(
        text.contains("svcnet_cluster_objects_rejected_total{kind=\"Service\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("svcnet_cluster_objects_rejected_total{kind=\"Pod\"} 0\n"),
        "{text}"
    );
    assert!(logs.contains("WARN"));
    assert!(
        logs.contains("Service default/bad: spec.type: `Bogus`"),
        "{}",
        logs.text()
    );
}

#[tokio::test(start_paused = true)]
async fn outage_is_logged_once_and_recovery_when_events_flow_again() {
    let logs = Logs::capture();
    let metrics = SourceMetrics::new(Kind::watched(&all_kinds()));
    let during_outage = vec![unreachable(Kind::Service), unreachable(Kind::Pod)];
    let events = stream::iter(empty_lists())
        .chain(after(Duration::from_secs(1), during_outage))
        .chain(after(Duration::from_secs(1), vec![unreachable(Kind::Service)]))
        .chain(after(
            Duration::from_secs(1),
            vec![Ok(apply(service("a", "10.96.0.1")))],
        ));
    let mut states = Vec::new();
    let probe_metrics = metrics.clone();
    // Sample the gauge in the middle of the outage.
    let sampler = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        states.push(render(&probe_metrics));
    };
    let (published, ()) = tokio::join!(drive(&metrics, events), sampler);

    assert!(states[0].contains("svcnet_apiserver_up 0\n"), "{}", states[0]);
    let text = render(&metrics);
    assert!(text.contains("svcnet_apiserver_up 1\n"), "{text}");
    assert!(
        text.contains("svcnet_apiserver_watch_errors_total{resource=\"services\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("svcnet_apiserver_watch_errors_total{resource=\"pods\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        logs.count("API server unreachable, serving the last known state"),
        1
    );
    assert_eq!(logs.count("API server reachable again"), 1);
    // The state from before the outage was served throughout; the change after it arrived.
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|s| s.synced));
}

#[tokio::test(start_paused = true)]
async fn errors_the_api_server_answers_do_not_count_as_an_outage() {
    let logs = Logs::capture();
    let metrics = SourceMetrics::new(Kind::watched(&all_kinds()));
    let mut events = empty_lists();
    events.push(answered(Kind::Service, 403, "Forbidden"));
    events.push(answered(Kind::Pod, 410, "Expired"));
    drive(&metrics, stream::iter(events)).await;

    let text = render(&metrics);
    assert!(text.contains("svcnet_apiserver_up 1\n"), "{text}");
    assert!(
        text.contains("svcnet_apiserver_watch_errors_total{resource=\"services\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        logs.count("API server refused the watch"),
        1,
        "410 Gone is routine"
    );
    assert_eq!(logs.count("unreachable"), 0);
}

// ---- ApiServerSource against a real client ----

#[test]
fn node_selector_accepts_only_node_names() {
    assert_eq!(
        node_selector("node-1.example.com").expect("valid name"),
        "spec.nodeName=node-1.example.com"
    );
    for bad in ["", "Node-1", "a,spec.nodeName=b", "a b"] {
        assert!(
            matches!(node_selector(bad), Err(ApiServerError::InvalidNodeName(n)) if n == bad),
            "{bad:?}"
        );
    }
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    listener.local_addr().expect("bound address").port()
}

fn kubeconfig(server: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    });
    // JSON is YAML, and kubeconfig files are read as YAML.
    std::fs::write(file.path(), config.to_string()).expect("write kubeconfig");
    file
}

#[tokio::test]
async fn invalid_node_name_fails_run_at_once() {
    let file = kubeconfig(&format!("http://127.0.0.1:{}", closed_port()));
    let options = SourceOptions {
        pods: PodScope::Node("a,b".into()),
        endpoint_slices: true,
    };
    let source = ApiServerSource::connect(Some(file.path()), options)
        .await
        .expect("kubeconfig loads");
    let (publisher, _reader) = crate::channel();
    let result = tokio::time::timeout(Duration::from_secs(5), source.run(publisher)).await;
    assert!(matches!(result, Ok(Err(ApiServerError::InvalidNodeName(_)))));
}

#[tokio::test]
async fn missing_kubeconfig_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent");
    let result = ApiServerSource::connect(Some(&path), all_kinds()).await;
    assert!(matches!(result, Err(ApiServerError::Kubeconfig { path: p, .. }) if p == path));
}

#[tokio::test]
async fn unreachable_api_server_keeps_running_and_reports_down() {
    let logs = Logs::capture();
    let file = kubeconfig(&format!("http://127.0.0.1:{}", closed_port()));
    let source = ApiServerSource::connect(Some(file.path()), all_kinds())
        .await
        .expect("kubeconfig loads");
    let metrics = source.metrics().clone();
    let (publisher, reader) = crate::channel();
    let mut run = tokio::spawn(source.run(publisher));

    // Every watch fails at once (connection refused); wait for the Service watch's error too.
    let reported = tokio::time::timeout(Duration::from_secs(10), async {
        while !logs.contains("API server unreachable, serving the last known state")
            || render(&metrics).contains("svcnet_apiserver_watch_errors_total{resource=\"services\"} 0\n")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reported.is_ok(), "no outage reported: {}", logs.text());

    // Still running, retrying under backoff.
    let still_running = tokio::time::timeout(Duration::from_millis(200), &mut run).await;
    assert!(still_running.is_err());
    let text = render(&metrics);
    assert!(text.contains("svcnet_apiserver_up 0\n"), "{text}");
    assert!(!reader.load().synced);
    run.abort();
}

// ---- log capture ----

/// Collects the log lines of the current thread while alive. Tests run on a current-thread
/// runtime, so this includes the tasks they spawn.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        let buffer = self.buffer.lock().expect("log buffer lock");
        String::from_utf8_lossy(&buffer).into_owned()
    }

    fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }

    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("log buffer poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

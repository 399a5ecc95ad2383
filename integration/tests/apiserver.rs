//! svcnet against a real control plane (etcd, kube-apiserver with RBAC, the EndpointSlice
//! controller): the deployment manifests, the ServiceAccount's privileges, the lifecycle of
//! Services and Pods as DNS and the proxy rules see it, and API server faults.
//!
//! Every test makes its own namespaces, so they run in parallel on the shared control plane;
//! the fault tests that stop the API server or need other API server flags start their own.
//! Each convergence is polled every 20 ms and printed with the time it took and its bound.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};
use serde_json::{Value, json};
use svcnet_integration::{
    Svcnet, Transport,
    controlplane::{ControlPlane, client_from_kubeconfig},
    free_port,
    kubeapi::{
        apply, create,
        k8s_openapi::api::{
            authentication::v1::{TokenRequest, TokenRequestSpec},
            core::v1::{ConfigMap, Pod, Service, ServiceAccount},
        },
        kube::{
            self, Api, Client,
            api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch},
        },
        namespace, node, pod, pod_status, unique,
    },
    query_sync,
    tcpproxy::TcpRelay,
};

const BIN: &str = env!("CARGO_BIN_EXE_svcnet");
const POLL: Duration = Duration::from_millis(20);
/// How long an API change may take to reach DNS.
const BOUND: Duration = Duration::from_secs(10);
/// How long svcnet may take to come back after an outage: its watches retry with kube's
/// backoff (0.8 s doubling up to 30 s, jittered), so a reconnection waits for the next try.
const RECONNECT_BOUND: Duration = Duration::from_secs(60);

/// svcnet following an API server, every listener on a free loopback port, no upstreams.
struct Follower {
    svcnet: Svcnet,
    metrics: SocketAddr,
    _kubeconfig: tempfile::NamedTempFile,
}

fn follow(kubeconfig: &str, node: &str) -> Follower {
    follow_with(kubeconfig, node, &[])
}

/// [`follow`] with `extra` flags.
fn follow_with(kubeconfig: &str, node: &str, extra: &[&str]) -> Follower {
    let mut file = tempfile::NamedTempFile::new().expect("kubeconfig file");
    file.write_all(kubeconfig.as_bytes()).expect("write kubeconfig");
    let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let args: Vec<String> = [
        "run",
        "--kubeconfig",
        &file.path().display().to_string(),
        "--node-name",
        node,
        "--dns-listen",
        &dns.to_string(),
        "--metrics-listen",
        &metrics.to_string(),
        // Nothing else on fixed ports (parallel tests), and nothing forwarded off the machine.
        "--health-listen=",
        "--ready-listen=",
        "--upstreams=",
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect();
    Follower {
        svcnet: Svcnet::start(BIN, &args, dns),
        metrics,
        _kubeconfig: file,
    }
}

impl Follower {
    /// The response code and the sorted A records for `name`; `None` if no reply came.
    fn a(&self, name: &str) -> Option<(ResponseCode, Vec<String>)> {
        let name = Name::from_ascii(name).expect("name");
        let reply = query_sync(
            self.svcnet.dns,
            &name,
            RecordType::A,
            Transport::Udp,
            Duration::from_millis(200),
        )
        .ok()?;
        let mut ips: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
        ips.sort();
        Some((reply.metadata.response_code, ips))
    }

    /// Whether `name` answers exactly `ips` (sorted).
    fn answers(&self, name: &str, ips: &[&str]) -> bool {
        self.a(name)
            .is_some_and(|(rcode, got)| rcode == ResponseCode::NoError && got == ips)
    }

    fn nxdomain(&self, name: &str) -> bool {
        self.a(name)
            .is_some_and(|(rcode, _)| rcode == ResponseCode::NXDomain)
    }

    /// The value of one sample of `/metrics`, e.g. `svcnet_apiserver_up`.
    fn metric(&self, sample: &str) -> Option<f64> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls `done` every 20 ms until it holds, and prints how long that took against `bound`;
    /// fails with svcnet's log after `bound`.
    async fn within(&self, what: &str, bound: Duration, done: impl FnMut(&Self) -> bool) -> Duration {
        self.within_all(what, bound, vec![("", Box::new(done))]).await
    }

    /// [`within`](Self::within) for several views of one change (DNS, the proxy rules): polls
    /// each until it has held once, and prints for each how long that took from the same start.
    async fn within_all(&self, what: &str, bound: Duration, mut checks: Vec<(&str, Check<'_>)>) -> Duration {
        let began = Instant::now();
        let mut pending: Vec<usize> = (0..checks.len()).collect();
        loop {
            pending.retain(|&i| {
                let (view, done) = &mut checks[i];
                if !done(self) {
                    return true;
                }
                let took = began.elapsed();
                let what = if view.is_empty() {
                    what.to_owned()
                } else {
                    format!("{what} ({view})")
                };
                println!("{what}: {took:.2?} (bound {bound:?})");
                false
            });
            if pending.is_empty() {
                return began.elapsed();
            }
            let views: Vec<&str> = pending.iter().map(|&i| checks[i].0).collect();
            assert!(
                began.elapsed() < bound,
                "{what} {views:?}: not within {bound:?}; svcnet's log:\n{}",
                self.svcnet.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The proxy rules svcnet's `--proxy dry-run` transactions logged so far add up to.
    fn rules(&self) -> ProxyRules {
        ProxyRules::replay(&self.svcnet.log())
    }
}

/// One view of a change for [`Follower::within_all`].
type Check<'a> = Box<dyn FnMut(&Follower) -> bool + 'a>;

/// A change as DNS and as the proxy rules show it, for [`Follower::within_all`].
fn both<'a>(
    dns: impl FnMut(&Follower) -> bool + 'a,
    proxy: impl FnMut(&Follower) -> bool + 'a,
) -> Vec<(&'static str, Check<'a>)> {
    vec![("DNS", Box::new(dns)), ("proxy", Box::new(proxy))]
}

/// svcnet's tables as its `--proxy dry-run` log says it would have programmed them: every
/// logged transaction replayed in order, element by element (`add element` / `delete element`
/// blocks, `flush map`, and `delete table`, which starts a full replace).
#[derive(Debug, Default)]
struct ProxyRules {
    /// `family map` (e.g. `ip endpoints-tcp`) -> element key -> the element's data.
    maps: BTreeMap<String, BTreeMap<String, String>>,
    /// How many transactions were full replaces, and how many element changes only.
    full: usize,
    partial: usize,
}

impl ProxyRules {
    fn replay(log: &str) -> Self {
        let mut rules = Self::default();
        let mut lines = log.lines();
        while let Some(line) = lines.next() {
            if !line.ends_with("proxy sync (dry run), would apply:") {
                continue;
            }
            let mut full = false;
            // The element block being read: whether it adds, and its `family map`.
            let mut block: Option<(bool, String)> = None;
            // The transaction's text is followed by the event's fields, ` full=… added=…`.
            for line in lines.by_ref().take_while(|l| !l.starts_with(" full=")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["delete", "table", family, _] => {
                        full = true;
                        rules
                            .maps
                            .retain(|map, _| !map.starts_with(&format!("{family} ")));
                    }
                    ["flush", "map", family, _, map] => {
                        rules.maps.remove(&format!("{family} {map}"));
                    }
                    [verb @ ("add" | "delete"), "element", family, _, map, "{"] => {
                        block = Some((*verb == "add", format!("{family} {map}")));
                    }
                    ["}"] => block = None,
                    _ if line.starts_with('\t') => {
                        let (add, map) = block
                            .as_ref()
                            .unwrap_or_else(|| panic!("element outside a block: {line}"));
                        let element = line.trim().trim_end_matches(',');
                        // Comments are quoted without spaces, so ` : ` only separates the data.
                        let (head, data) = element.split_once(" : ").unwrap_or((element, ""));
                        let key = head.split_once(" comment ").map_or(head, |(key, _)| key);
                        let elements = rules.maps.entry(map.clone()).or_default();
                        if *add {
                            elements.insert(key.to_owned(), data.to_owned());
                        } else {
                            elements.remove(key);
                        }
                    }
                    _ => {}
                }
            }
            if full {
                rules.full += 1;
            } else {
                rules.partial += 1;
            }
        }
        rules
    }

    /// The sorted endpoint addresses of the IPv4 TCP entry point `vip:port`.
    fn endpoints(&self, vip: &str, port: u16) -> Vec<String> {
        let prefix = format!("{vip} . tcp . {port} . ");
        let mut ips: Vec<String> = self
            .maps
            .get("ip endpoints-tcp")
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, data)| data.split(" . ").next().unwrap_or_default().to_owned())
            .collect();
        ips.sort();
        ips
    }

    /// Whether `vip:port` (TCP) is dispatched to a load-balancing chain.
    fn dispatches(&self, vip: &str, port: u16) -> bool {
        self.maps
            .get("ip service-ips")
            .is_some_and(|elements| elements.contains_key(&format!("{vip} . tcp . {port}")))
    }

    /// Every `map: key` whose key starts with `ip`, in any IPv4 map.
    fn entries_of(&self, ip: &str) -> Vec<String> {
        let prefix = format!("{ip} . ");
        self.maps
            .iter()
            .filter(|(map, _)| map.starts_with("ip "))
            .flat_map(|(map, elements)| {
                (elements.keys())
                    .filter(|key| key.starts_with(&prefix))
                    .map(move |key| format!("{map}: {key}"))
            })
            .collect()
    }
}

/// The objects of deploy/svcnet.yaml, as JSON.
fn deploy_objects() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/svcnet.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/svcnet.yaml");
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).expect("deploy/svcnet.yaml is YAML");
    // The comment block before the first `---` is an empty document.
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// How many slice versions `coredns_kubernetes_dns_programming_duration_seconds` observed for
/// `kind` (0 before the first).
fn programming_count(svcnet: &Follower, kind: &str) -> f64 {
    svcnet
        .metric(&format!(
            "coredns_kubernetes_dns_programming_duration_seconds_count{{service_kind=\"{kind}\"}}"
        ))
        .unwrap_or(0.0)
}

fn fqdn(service: &str, ns: &str) -> String {
    format!("{service}.{ns}.svc.cluster.local.")
}

fn cluster_ip(object: &kube::api::DynamicObject) -> String {
    object.data["spec"]["clusterIP"]
        .as_str()
        .expect("an allocated ClusterIP")
        .to_owned()
}

async fn service(client: &Client, ns: &str, name: &str, spec: Value) -> kube::api::DynamicObject {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .await
}

/// A ClusterIP Service without a selector: all these tests need is its name and address.
async fn plain_service(client: &Client, ns: &str, name: &str) -> String {
    cluster_ip(&service(client, ns, name, json!({"ports": [{"port": 80}]})).await)
}

async fn delete_service(client: &Client, ns: &str, name: &str) {
    Api::<Service>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete service {ns}/{name}: {e}"));
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_are_accepted_and_the_role_only_lists_and_watches() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let objects = deploy_objects();
    let began = Instant::now();
    for object in &objects {
        let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
        apply(&client, object, true)
            .await
            .unwrap_or_else(|e| panic!("server-side apply (dry run) of {what}: {e}"));
    }
    println!(
        "deploy/svcnet.yaml: {} objects accepted by a dry-run server-side apply in {:.2?}",
        objects.len(),
        began.elapsed()
    );
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
    ] {
        assert!(kinds.contains(kind), "deploy/svcnet.yaml has no {kind}");
    }

    let role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole")
        .expect("the ClusterRole");
    let rules = role["rules"].as_array().expect("rules");
    let mut granted = BTreeSet::new();
    for rule in rules {
        let verbs: BTreeSet<&str> = rule["verbs"]
            .as_array()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(verbs, BTreeSet::from(["list", "watch"]), "rule {rule}");
        for key in ["resourceNames", "nonResourceURLs"] {
            assert!(rule.get(key).is_none(), "rule {rule} has {key}");
        }
        granted.extend(
            rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .filter_map(Value::as_str),
        );
    }
    assert_eq!(
        granted,
        BTreeSet::from(["endpointslices", "namespaces", "pods", "services"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_syncs_and_can_change_nothing() {
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    for object in deploy_objects().iter().filter(|o| {
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"].contains(&o["kind"].as_str().unwrap_or(""))
    }) {
        create(&admin, object.clone()).await;
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), "kube-system")
        .create_token_request("svcnet", &PostParams::default(), &request)
        .await
        .expect("TokenRequest for kube-system/svcnet")
        .status
        .expect("token")
        .token;
    let kubeconfig = cp.kubeconfig_with(None, Some(&token));
    let svcnet = follow(&kubeconfig, "n1");

    let ns = unique("rbac");
    namespace(&admin, &ns).await;
    let ip = plain_service(&admin, &ns, "web").await;
    svcnet
        .within("least privilege: a new Service resolves", BOUND, |s| {
            s.answers(&fqdn("web", &ns), &[&ip])
        })
        .await;

    let sa = client_from_kubeconfig(&kubeconfig).await;
    let config_map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": ns}})).expect("ConfigMap");
    let config_maps = Api::<ConfigMap>::namespaced(sa.clone(), &ns);
    let services = Api::<Service>::namespaced(sa.clone(), &ns);
    assert!(forbidden(
        config_maps.create(&PostParams::default(), &config_map).await
    ));
    assert!(forbidden(services.delete("web", &DeleteParams::default()).await));
    assert!(forbidden(
        services
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))
            )
            .await
    ));
    assert!(forbidden(
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
    ));
    // Not even single reads: the watches never need them.
    assert!(forbidden(services.get("web").await));
    assert!(forbidden(
        Api::<ConfigMap>::all(sa).list(&ListParams::default()).await
    ));
    println!("least privilege: create, delete, patch, get and list beyond the role all 403");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_pods_reach_dns_and_the_proxy_as_they_change() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = unique("life");
    let node_name = unique("node");
    namespace(&client, &ns).await;
    node(&client, &node_name).await;
    // The proxy only logs the transactions it would load; no fixed port for its /healthz.
    let svcnet = follow_with(
        cp.kubeconfig(),
        &node_name,
        &["--proxy", "dry-run", "--proxy-healthz-listen="],
    );
    let name = |n: &str| fqdn(n, &ns);

    // A ClusterIP Service with ready Pods answers its ClusterIP, and balances over them.
    let ip = cluster_ip(
        &service(
            &client,
            &ns,
            "api",
            json!({"selector": {"app": "api"}, "ports": [{"port": 80}]}),
        )
        .await,
    );
    for (pod_name, pod_ip) in [("api-a", "10.244.1.1"), ("api-b", "10.244.1.2")] {
        pod(&client, &ns, pod_name, &node_name, json!({"app": "api"}), None).await;
        pod_status(&client, &ns, pod_name, pod_ip, true).await;
    }
    svcnet
        .within_all(
            "lifecycle: ClusterIP Service resolves and its ready endpoints are in the rules",
            BOUND,
            both(
                |s| s.answers(&name("api"), &[&ip]),
                |s| {
                    let rules = s.rules();
                    rules.dispatches(&ip, 80) && rules.endpoints(&ip, 80) == ["10.244.1.1", "10.244.1.2"]
                },
            ),
        )
        .await;
    // The real EndpointSlice controller stamps the slice with the time of the Pod change, so
    // the DNS programming latency SLI was observed for the ClusterIP Service.
    svcnet
        .within(
            "lifecycle: DNS programming latency observed (cluster_ip)",
            BOUND,
            |s| programming_count(s, "cluster_ip") >= 1.0,
        )
        .await;

    // A headless Service over StatefulSet-style Pods: the EndpointSlice controller gives each
    // endpoint its Pod's hostname. A ClusterIP Service over the same Pods has them in the rules
    // (a headless one has no rules).
    service(
        &client,
        &ns,
        "web",
        json!({"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
    )
    .await;
    let web_vip = cluster_ip(
        &service(
            &client,
            &ns,
            "web-vip",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        )
        .await,
    );
    for i in 0..3 {
        let pod_name = format!("web-{i}");
        pod(
            &client,
            &ns,
            &pod_name,
            &node_name,
            json!({"app": "web"}),
            Some((&pod_name, "web")),
        )
        .await;
        pod_status(&client, &ns, &pod_name, &format!("10.244.2.{i}"), true).await;
    }
    let web0 = format!("web-0.web.{ns}.svc.cluster.local.");
    // The web Pods' endpoints, in DNS (headless) and in the rules (web-vip).
    let (web_name, web_vip) = (&name("web"), &web_vip);
    let web = |ips: &'static [&'static str]| {
        both(
            move |s| s.answers(web_name, ips),
            move |s| s.rules().endpoints(web_vip, 80) == ips,
        )
    };
    let mut checks = web(&["10.244.2.0", "10.244.2.1", "10.244.2.2"]);
    checks.push(("hostname", Box::new(|s| s.answers(&web0, &["10.244.2.0"]))));
    svcnet
        .within_all(
            "lifecycle: headless hostname record from the real EndpointSlice",
            BOUND,
            checks,
        )
        .await;
    svcnet
        .within(
            "lifecycle: DNS programming latency observed (headless_with_selector)",
            BOUND,
            |s| programming_count(s, "headless_with_selector") >= 1.0,
        )
        .await;

    // Scaled down: the Pod terminates (no kubelet finishes it, so it stays terminating, which
    // is when the endpoint stops being ready).
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete("web-2", &DeleteParams::default())
        .await
        .expect("delete pod web-2");
    svcnet
        .within_all(
            "lifecycle: deleted Pod leaves the answer and the rules",
            BOUND,
            web(&["10.244.2.0", "10.244.2.1"]),
        )
        .await;

    pod_status(&client, &ns, "web-1", "10.244.2.1", false).await;
    svcnet
        .within_all(
            "lifecycle: unready Pod leaves the answer and the rules",
            BOUND,
            web(&["10.244.2.0"]),
        )
        .await;

    // The selector moves from the blue Pods to the green ones, of a headless Service and of a
    // ClusterIP one.
    let blue = json!({"selector": {"color": "blue"}, "ports": [{"port": 80}]});
    let mut headless = blue.clone();
    headless["clusterIP"] = json!("None");
    service(&client, &ns, "color", headless).await;
    let color_vip = cluster_ip(&service(&client, &ns, "color-vip", blue).await);
    for (color, ip) in [("blue", "10.244.3.1"), ("green", "10.244.3.2")] {
        pod(&client, &ns, color, &node_name, json!({"color": color}), None).await;
        pod_status(&client, &ns, color, ip, true).await;
    }
    let (color_name, color_vip) = (&name("color"), &color_vip);
    let color = |ips: &'static [&'static str]| {
        both(
            move |s| s.answers(color_name, ips),
            move |s| s.rules().endpoints(color_vip, 80) == ips,
        )
    };
    svcnet
        .within_all(
            "lifecycle: the blue Pod is the endpoint",
            BOUND,
            color(&["10.244.3.1"]),
        )
        .await;
    for svc in ["color", "color-vip"] {
        Api::<Service>::namespaced(client.clone(), &ns)
            .patch(
                svc,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"selector": {"color": "green"}}})),
            )
            .await
            .expect("switch the selector");
    }
    svcnet
        .within_all(
            "lifecycle: selector blue -> green: green added, blue removed",
            BOUND,
            color(&["10.244.3.2"]),
        )
        .await;

    delete_service(&client, &ns, "api").await;
    svcnet
        .within_all(
            "lifecycle: deleted Service answers NXDOMAIN and leaves the rules",
            BOUND,
            both(
                |s| s.nxdomain(&name("api")),
                |s| s.rules().entries_of(&ip).is_empty(),
            ),
        )
        .await;

    // Every change above came as element adds and deletes: only the first sync replaced the
    // tables, and the other Services are untouched.
    let rules = svcnet.rules();
    println!(
        "lifecycle: {} full and {} element-only proxy transactions",
        rules.full, rules.partial
    );
    assert_eq!(rules.full, 1, "{}", svcnet.svcnet.log());
    assert!(rules.dispatches(web_vip, 80) && rules.dispatches(color_vip, 80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_keeps_dns_answering_and_converges() {
    let mut cp = ControlPlane::start(&[]);
    let client = cp.client().await;
    let ns = unique("restart");
    namespace(&client, &ns).await;
    let before = plain_service(&client, &ns, "before").await;
    let doomed = plain_service(&client, &ns, "doomed").await;
    let svcnet = follow(cp.kubeconfig(), "n1");
    svcnet
        .within("restart: initial sync", BOUND, |s| {
            s.answers(&fqdn("before", &ns), &[&before]) && s.metric("svcnet_apiserver_up") == Some(1.0)
        })
        .await;

    let stopped = Instant::now();
    cp.stop();
    println!("restart: control plane stopped in {:.2?}", stopped.elapsed());
    svcnet
        .within(
            "restart: outage noticed (log and svcnet_apiserver_up 0)",
            BOUND,
            |s| {
                s.svcnet.log().contains("API server unreachable")
                    && s.metric("svcnet_apiserver_up") == Some(0.0)
            },
        )
        .await;
    // Still the last known state, for as long as the API server is away.
    for _ in 0..10 {
        assert!(
            svcnet.answers(&fqdn("before", &ns), &[&before]),
            "{}",
            svcnet.svcnet.log()
        );
        assert!(svcnet.answers(&fqdn("doomed", &ns), &[&doomed]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let restarted = Instant::now();
    cp.restart();
    println!("restart: control plane back in {:.2?}", restarted.elapsed());
    // A change at once, most likely before svcnet's next retry.
    let client = cp.client().await;
    let early = plain_service(&client, &ns, "early").await;
    delete_service(&client, &ns, "doomed").await;
    let up = svcnet.metric("svcnet_apiserver_up");
    println!("restart: svcnet_apiserver_up was {up:?} when the first change after the restart was made");
    svcnet
        .within(
            "restart: change made right after the restart arrives",
            RECONNECT_BOUND,
            |s| s.answers(&fqdn("early", &ns), &[&early]) && s.nxdomain(&fqdn("doomed", &ns)),
        )
        .await;
    svcnet
        .within("restart: svcnet_apiserver_up 1 again", RECONNECT_BOUND, |s| {
            s.metric("svcnet_apiserver_up") == Some(1.0)
        })
        .await;
    assert!(svcnet.svcnet.log().contains("API server reachable again"));

    let late = plain_service(&client, &ns, "late").await;
    svcnet
        .within("restart: change after reconnecting arrives", BOUND, |s| {
            s.answers(&fqdn("late", &ns), &[&late])
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_after_compaction_relists() {
    // Without the watch cache, watches resume from etcd itself, which answers 410 Gone for a
    // compacted revision; the API server compacts every second.
    let cp = ControlPlane::start(&["--watch-cache=false", "--etcd-compaction-interval=1s"]);
    let client = cp.client().await;
    let relay = TcpRelay::start(SocketAddr::from((Ipv4Addr::LOCALHOST, cp.apiserver_port))).await;
    let ns = unique("compact");
    namespace(&client, &ns).await;
    let stays = plain_service(&client, &ns, "stays").await;
    let goes = plain_service(&client, &ns, "goes").await;
    let svcnet = follow(&cp.kubeconfig_with(Some(relay.addr), None), "n1");
    svcnet
        .within("compaction: initial sync", BOUND, |s| {
            s.answers(&fqdn("stays", &ns), &[&stays]) && s.answers(&fqdn("goes", &ns), &[&goes])
        })
        .await;

    // svcnet loses the API server; the test still reaches it directly.
    relay.cut();
    svcnet
        .within("compaction: outage noticed", BOUND, |s| {
            s.svcnet.log().contains("API server unreachable")
        })
        .await;
    delete_service(&client, &ns, "goes").await;
    let comes = service(&client, &ns, "comes", json!({"ports": [{"port": 80}]})).await;
    let comes_ip = cluster_ip(&comes);
    // Once the revision of the last change is compacted, so is every revision svcnet saw.
    let revision = comes.metadata.resource_version.clone().expect("resourceVersion");
    let services = Api::<Service>::all(client.clone());
    let exact = ListParams::default().at(&revision).matching(VersionMatch::Exact);
    let began = Instant::now();
    while !matches!(services.list(&exact).await, Err(kube::Error::Api(status)) if status.code == 410) {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "revision {revision} never compacted"
        );
        tokio::time::sleep(POLL).await;
    }
    println!(
        "compaction: revision {revision} compacted after {:.2?}",
        began.elapsed()
    );
    // Meanwhile svcnet still serves what it last knew.
    assert!(svcnet.answers(&fqdn("goes", &ns), &[&goes]));

    relay.reconnect();
    // A deletion whose event was compacted away shows only in a fresh list.
    svcnet
        .within(
            "compaction: relisted (deleted Service gone, new one there)",
            RECONNECT_BOUND,
            |s| s.nxdomain(&fqdn("goes", &ns)) && s.answers(&fqdn("comes", &ns), &[&comes_ip]),
        )
        .await;
    assert!(svcnet.answers(&fqdn("stays", &ns), &[&stays]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_svcnet_cannot_use_is_skipped_and_the_rest_keeps_working() {
    // The API server validates every Service field svcnet reads as strictly as svcnet does (IP
    // and CIDR forms, ports, protocols, policies, affinity timeouts), so the object is an
    // EndpointSlice: the API server accepts a port beyond 65535 in one, svcnet cannot use it.
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = unique("reject");
    namespace(&client, &ns).await;
    let svcnet = follow(cp.kubeconfig(), "n1");
    let slice = |service: &str, ip: &str, port: u32| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("{service}-1"), "namespace": ns,
                            "labels": {"kubernetes.io/service-name": service}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": [ip]}],
               "ports": [{"port": port}]})
    };
    // Headless Services without selectors: the slices are the test's, not the controller's.
    for svc in ["good", "bad", "later"] {
        service(
            &client,
            &ns,
            svc,
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        )
        .await;
    }
    create(&client, slice("good", "10.244.5.1", 80)).await;
    svcnet
        .within("rejected: a good slice resolves", BOUND, |s| {
            s.answers(&fqdn("good", &ns), &["10.244.5.1"])
        })
        .await;

    create(&client, slice("bad", "10.244.5.2", 65_536)).await;
    let logged = format!("skipping a malformed object: EndpointSlice {ns}/bad-1");
    svcnet
        .within("rejected: port 65536 logged and counted", BOUND, |s| {
            s.svcnet.log().contains(&logged)
                && s.metric("svcnet_cluster_objects_rejected_total{kind=\"EndpointSlice\"}")
                    .is_some_and(|n| n >= 1.0)
        })
        .await;
    create(&client, slice("later", "10.244.5.3", 80)).await;
    svcnet
        .within("rejected: a later change still arrives", BOUND, |s| {
            s.answers(&fqdn("later", &ns), &["10.244.5.3"]) && s.answers(&fqdn("good", &ns), &["10.244.5.1"])
        })
        .await;
    assert!(
        !svcnet.answers(&fqdn("bad", &ns), &["10.244.5.2"]),
        "the bad slice was served"
    );
}

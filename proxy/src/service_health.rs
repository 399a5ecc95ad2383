//! healthCheckNodePort servers: for each LoadBalancer Service with `externalTrafficPolicy:
//! Local`, an HTTP server on its `healthCheckNodePort` that tells the cloud load balancer
//! whether this node has ready endpoints of the Service, so that only such nodes get its
//! traffic (the others drop it, see [`crate::desired`]).
//!
//! Answers as kube-proxy's `pkg/proxy/healthcheck/service_health.go`: 200 when the node has a
//! local ready endpoint and the proxy is healthy, 503 otherwise; the JSON body
//! `{"service":{"namespace":…,"name":…},"localEndpoints":N,"serviceProxyHealthy":bool}` and
//! the header `X-Load-Balancing-Endpoint-Weight: N`, on every path.
//!
//! Which ports to serve, with which counts, is a pure function of the snapshot
//! ([`targets`]); [`ServiceHealthServers::reconcile`] starts and stops servers to match it
//! after every successful sync.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse};
use svcnet_cluster::{
    ServiceEntry, Snapshot,
    model::{ObjectKey, ServiceAddressing, ServiceType, TrafficPolicy},
};
use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

use crate::{
    health::{AbortOnDrop, ProxyHealth, json},
    node::NodeContext,
};

/// What one healthCheckNodePort server reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealthTarget {
    pub service: ObjectKey,
    /// Distinct addresses of the Service's ready endpoints on this node.
    pub local_endpoints: usize,
}

/// The healthCheckNodePort servers `snapshot` asks for on `node`, by port. When two Services
/// claim one port (the API server does not allow it), the first by namespace/name wins.
pub fn targets(snapshot: &Snapshot, node: &NodeContext) -> BTreeMap<u16, ServiceHealthTarget> {
    let mut services: Vec<&ServiceEntry> = snapshot.services().collect();
    services.sort_by(|a, b| a.service.key.cmp(&b.service.key));
    let mut out = BTreeMap::new();
    for entry in services {
        let svc = &*entry.service;
        // Only LoadBalancer Services get a healthCheckNodePort allocated, and only with the
        // Local policy; a leftover value after a type or policy change is not served.
        let proxied = matches!(svc.addressing, ServiceAddressing::ClusterIp(_));
        let Some(port @ 1..) = svc.health_check_node_port else {
            continue;
        };
        if !proxied
            || svc.service_type != ServiceType::LoadBalancer
            || svc.external_traffic_policy != TrafficPolicy::Local
        {
            continue;
        }
        out.entry(port).or_insert_with(|| ServiceHealthTarget {
            service: svc.key.clone(),
            local_endpoints: local_ready_endpoints(entry, node),
        });
    }
    out
}

/// kube-proxy's `LocalReadyEndpoints`: ready endpoints on this node, counted by address (an
/// endpoint serving two ports is one). Terminating endpoints are left out even when they
/// still serve: a node with only those fails the check, so the load balancer drains it while
/// the proxy still forwards to them.
fn local_ready_endpoints(entry: &ServiceEntry, node: &NodeContext) -> usize {
    let ports = &entry.service.ports;
    let addresses: BTreeSet<IpAddr> = entry
        .slices
        .iter()
        // Only slices with a port of the Service: the proxy uses no other endpoint.
        .filter(|slice| {
            slice.ports.iter().any(|p| {
                p.port.is_some()
                    && ports
                        .iter()
                        .any(|sp| sp.name == p.name && sp.protocol == p.protocol)
            })
        })
        .flat_map(|slice| &slice.endpoints)
        .filter(|ep| ep.ready && node.is_local(ep.node_name.as_deref()))
        .flat_map(|ep| ep.addresses.iter().copied())
        .collect();
    addresses.len()
}

/// The running healthCheckNodePort servers.
pub struct ServiceHealthServers {
    /// The addresses to listen on: the NodePort addresses, or none for the wildcard.
    bind: Vec<IpAddr>,
    health: Arc<ProxyHealth>,
    /// How long to wait before binding again after a failure.
    retry: Duration,
    servers: BTreeMap<u16, Server>,
}

struct Server {
    target: watch::Sender<ServiceHealthTarget>,
    /// One listener task per address; dropping them closes the port.
    _tasks: Vec<AbortOnDrop>,
}

impl ServiceHealthServers {
    /// Servers on `bind` (empty: every address, `0.0.0.0`, as kube-proxy does when the
    /// NodePort addresses are all of the node's), reporting `health`; a port that cannot be
    /// bound is tried again every `retry`.
    pub fn new(bind: Vec<IpAddr>, health: Arc<ProxyHealth>, retry: Duration) -> Self {
        Self {
            bind,
            health,
            retry,
            servers: BTreeMap::new(),
        }
    }

    /// Serves exactly `targets`: stops the servers of ports no longer wanted, updates the
    /// counts of the others, starts the new ones.
    pub fn reconcile(&mut self, mut targets: BTreeMap<u16, ServiceHealthTarget>) {
        self.servers.retain(|port, server| match targets.remove(port) {
            Some(target) => {
                server.target.send_if_modified(|current| {
                    let changed = *current != target;
                    *current = target;
                    changed
                });
                true
            }
            None => {
                info!(port, service = %server.target.borrow().service, "stopping health check server");
                false
            }
        });
        for (port, target) in targets {
            let addrs = if self.bind.is_empty() {
                vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))]
            } else {
                self.bind.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
            };
            let (sender, receiver) = watch::channel(target);
            let tasks = addrs
                .into_iter()
                .map(|addr| {
                    let state = (receiver.clone(), self.health.clone());
                    AbortOnDrop::spawn(listen(addr, state, self.retry))
                })
                .collect();
            self.servers.insert(
                port,
                Server {
                    target: sender,
                    _tasks: tasks,
                },
            );
        }
    }

    /// The ports served (or being bound), in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.servers.keys().copied()
    }
}

type ServerState = (watch::Receiver<ServiceHealthTarget>, Arc<ProxyHealth>);

/// Binds `addr` and serves it, binding again after `retry` whenever that fails (the port is
/// taken by another process, or the address is not up yet).
async fn listen(addr: SocketAddr, state: ServerState, retry: Duration) {
    let router = Router::new().fallback(answer).with_state(state.clone());
    loop {
        let service = state.0.borrow().service.clone();
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                info!(%addr, %service, "health check server listening");
                if let Err(error) = axum::serve(listener, router.clone()).await {
                    warn!(%addr, %service, %error, "health check server failed");
                }
            }
            // kube-proxy's event for this is FailedToStartServiceHealthcheck.
            Err(error) => warn!(
                %addr, %service, %error, retry_in = ?retry,
                "FailedToStartServiceHealthcheck: cannot listen on the healthCheckNodePort"
            ),
        }
        tokio::time::sleep(retry).await;
    }
}

async fn answer(State((target, health)): State<ServerState>) -> impl IntoResponse {
    let target = target.borrow().clone();
    let healthy = health.status().healthy;
    let status = if target.local_endpoints > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "service": {
            "namespace": &*target.service.namespace,
            "name": &*target.service.name,
        },
        "localEndpoints": target.local_endpoints,
        "serviceProxyHealthy": healthy,
    });
    (
        [(
            "x-load-balancing-endpoint-weight",
            target.local_endpoints.to_string(),
        )],
        json(status, body.to_string()),
    )
}

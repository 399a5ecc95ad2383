//! Immutable, indexed views of the cluster, and the channel that publishes them.
//!
//! Readers (every DNS query, every proxy sync) `load()` the current snapshot without taking a
//! lock; the writer builds the next snapshot off to the side and swaps it in whole.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::model::{Endpoint, EndpointSlice, Namespace, Pod, Service};

/// A Service together with the EndpointSlices labelled with its name.
#[derive(Debug)]
pub struct ServiceEntry {
    pub service: Arc<Service>,
    pub slices: Vec<Arc<EndpointSlice>>,
}

impl ServiceEntry {
    /// Every endpoint of every slice, with the ports of its slice.
    pub fn endpoints(&self) -> impl Iterator<Item = (&EndpointSlice, &Endpoint)> {
        self.slices
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |e| (&**s, e)))
    }
}

#[derive(Debug)]
pub struct NamespaceEntry {
    pub namespace: Namespace,
    /// Services of this namespace by name.
    pub services: HashMap<Arc<str>, ServiceEntry>,
}

/// An endpoint found by address, for reverse lookups. The slice may belong to a Service that
/// does not exist (yet): the service-name label is enough for a PTR record.
#[derive(Clone, Debug)]
pub struct EndpointRef {
    pub slice: Arc<EndpointSlice>,
    pub index: usize,
}

impl EndpointRef {
    pub fn endpoint(&self) -> &Endpoint {
        &self.slice.endpoints[self.index]
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Whether every source finished its first complete listing. Before that, an absent name
    /// may just not have arrived yet.
    pub synced: bool,
    /// Unix time of the last change that DNS can see; the zone's SOA serial.
    pub serial: u32,
    namespaces: HashMap<Arc<str>, NamespaceEntry>,
    /// ClusterIP -> Service; the first Service wins if two claim one address.
    service_ips: HashMap<IpAddr, Arc<Service>>,
    /// Endpoint address -> every endpoint (of any slice) carrying it.
    endpoint_ips: HashMap<IpAddr, Vec<EndpointRef>>,
    pods_by_ip: HashMap<IpAddr, Vec<Arc<Pod>>>,
    pods: Vec<Arc<Pod>>,
}

impl Snapshot {
    pub fn namespace(&self, name: &str) -> Option<&NamespaceEntry> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceEntry> {
        self.namespaces.values()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        self.namespaces.get(namespace)?.services.get(name)
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.namespaces.values().flat_map(|ns| ns.services.values())
    }

    pub fn service_by_cluster_ip(&self, ip: IpAddr) -> Option<&Arc<Service>> {
        self.service_ips.get(&ip)
    }

    pub fn endpoints_by_ip(&self, ip: IpAddr) -> &[EndpointRef] {
        self.endpoint_ips.get(&ip).map_or(&[], Vec::as_slice)
    }

    pub fn pods_by_ip(&self, ip: IpAddr) -> &[Arc<Pod>] {
        self.pods_by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }

    pub fn pods(&self) -> &[Arc<Pod>] {
        &self.pods
    }
}

/// Builds a snapshot from whole collections; see [`crate::ClusterState::snapshot`].
pub(crate) struct SnapshotBuilder {
    snapshot: Snapshot,
}

impl SnapshotBuilder {
    pub(crate) fn new(synced: bool, serial: u32) -> Self {
        Self {
            snapshot: Snapshot {
                synced,
                serial,
                ..Snapshot::default()
            },
        }
    }

    pub(crate) fn namespace(&mut self, ns: &Namespace) {
        self.snapshot
            .namespaces
            .entry(ns.name.clone())
            .or_insert_with(|| NamespaceEntry {
                namespace: ns.clone(),
                services: HashMap::new(),
            });
    }

    pub(crate) fn service(&mut self, svc: &Arc<Service>) {
        let ns = self
            .snapshot
            .namespaces
            .entry(svc.key.namespace.clone())
            .or_insert_with(|| NamespaceEntry {
                namespace: Namespace {
                    name: svc.key.namespace.clone(),
                    labels: Default::default(),
                },
                services: HashMap::new(),
            });
        if let crate::model::ServiceAddressing::ClusterIp(ips) = &svc.addressing {
            for ip in ips {
                self.snapshot
                    .service_ips
                    .entry(*ip)
                    .or_insert_with(|| svc.clone());
            }
        }
        ns.services.insert(
            svc.key.name.clone(),
            ServiceEntry {
                service: svc.clone(),
                slices: Vec::new(),
            },
        );
    }

    /// Adds a slice; call after every Service is in so that it can be attached to its Service.
    pub(crate) fn slice(&mut self, slice: &Arc<EndpointSlice>) {
        for (index, ep) in slice.endpoints.iter().enumerate() {
            for ip in &ep.addresses {
                self.snapshot
                    .endpoint_ips
                    .entry(*ip)
                    .or_default()
                    .push(EndpointRef {
                        slice: slice.clone(),
                        index,
                    });
            }
        }
        if let Some(entry) = self
            .snapshot
            .namespaces
            .get_mut(&slice.key.namespace)
            .and_then(|ns| ns.services.get_mut(&slice.service_name))
        {
            entry.slices.push(slice.clone());
        }
    }

    pub(crate) fn pod(&mut self, pod: &Arc<Pod>) {
        for ip in &pod.ips {
            self.snapshot.pods_by_ip.entry(*ip).or_default().push(pod.clone());
        }
        self.snapshot.pods.push(pod.clone());
    }

    pub(crate) fn build(self) -> Snapshot {
        self.snapshot
    }
}

/// The writing end: sources publish whole snapshots here.
pub struct Publisher {
    current: Arc<ArcSwap<Snapshot>>,
    generation: watch::Sender<u64>,
}

/// The reading end, cheap to clone: one per DNS worker, one for the proxy.
#[derive(Clone)]
pub struct Reader {
    current: Arc<ArcSwap<Snapshot>>,
    generation: watch::Receiver<u64>,
}

/// A publisher and a reader sharing an empty, unsynced snapshot.
pub fn channel() -> (Publisher, Reader) {
    let current = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let (tx, rx) = watch::channel(0);
    (
        Publisher {
            current: current.clone(),
            generation: tx,
        },
        Reader {
            current,
            generation: rx,
        },
    )
}

impl Publisher {
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn reader(&self) -> Reader {
        Reader {
            current: self.current.clone(),
            generation: self.generation.subscribe(),
        }
    }
}

impl Reader {
    /// The current snapshot. Lock-free; hold the guard only for the duration of one answer.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for work that outlives one answer.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Waits until a snapshot newer than the last one seen through this reader is published.
    /// Returns `false` once the publisher is gone.
    pub async fn changed(&mut self) -> bool {
        self.generation.changed().await.is_ok()
    }

    /// Waits until a synced snapshot is published, or `timeout` passes; returns whether synced.
    pub async fn wait_synced(&mut self, timeout: std::time::Duration) -> bool {
        let wait = async {
            loop {
                if self.load().synced {
                    return true;
                }
                if !self.changed().await {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }
}

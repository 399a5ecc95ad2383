//! The cluster model svcnet serves from.
//!
//! Two sources keep it current: the API server ([`apiserver`]) and a directory of manifests
//! ([`manifests`]). Both convert API objects into the reduced [`model`], apply them to a
//! [`ClusterState`] and publish immutable [`Snapshot`]s through a [`Publisher`]; DNS and the
//! proxy only ever read snapshots.

pub mod apiserver;
pub mod convert;
pub mod manifests;
pub mod model;
mod snapshot;
mod state;

pub use snapshot::{EndpointRef, NamespaceEntry, Publisher, Reader, ServiceEntry, Snapshot, channel};
pub use state::{ClusterState, Collection};

/// Which Pods a source watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodScope {
    /// No Pods at all.
    None,
    /// Only Pods scheduled to this node (`spec.nodeName`), enough for node-local features.
    Node(String),
    /// Every Pod in the cluster (needed by `pods verified` for remote pods).
    All,
}

/// What a source should watch.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub pods: PodScope,
    /// `false` with the `noendpoints` option: EndpointSlices are not watched at all.
    pub endpoint_slices: bool,
}

//! What one load of the directory holds, converted to the model, until it replaces the state.

use std::{
    collections::{BTreeMap, HashSet, btree_map::Entry},
    fmt,
    path::Path,
    sync::Arc,
};

use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::{
    LoadReport, derive,
    files::Document,
    objects::{self, DEFAULT_NAMESPACE, Kind, Origin},
};
use crate::{
    ClusterState, PodScope, SourceOptions, convert,
    convert::ConvertError,
    model::{EndpointSlice, Namespace, ObjectKey, Pod, Service},
};

/// The objects of one load by key. Services and Pods keep their API object for deriving
/// EndpointSlices, which works on API objects so that derived slices are converted exactly as
/// the API server's would be.
pub(super) struct Contents<'a> {
    options: &'a SourceOptions,
    namespaces: Keyed<Arc<str>, Namespace>,
    services: Keyed<ObjectKey, (core::Service, Service)>,
    slices: Keyed<ObjectKey, EndpointSlice>,
    pods: Keyed<ObjectKey, (core::Pod, Pod)>,
}

impl<'a> Contents<'a> {
    pub fn new(options: &'a SourceOptions) -> Self {
        Self {
            options,
            namespaces: Keyed::default(),
            services: Keyed::default(),
            slices: Keyed::default(),
            pods: Keyed::default(),
        }
    }

    /// Adds the objects of one file; those that do not decode or convert go to the report.
    pub fn add_file(&mut self, path: &Path, documents: Vec<Document>, report: &mut LoadReport) {
        let path: Arc<Path> = path.into();
        for Document { value, line } in documents {
            let origin = Origin {
                path: path.clone(),
                line,
            };
            match self.add(value, &origin) {
                Ok(true) => report.objects += 1,
                Ok(false) => {}
                Err(message) => report.errors.push(origin.error(message)),
            }
        }
    }

    /// Decodes, converts and adds one object; returns whether it is used.
    fn add(&mut self, value: Value, origin: &Origin) -> Result<bool, String> {
        let Some(kind) = objects::kind_of(&value, origin)? else {
            return Ok(false);
        };
        let error = |e: ConvertError| e.to_string();
        match kind {
            Kind::Namespace => {
                let ns = convert::namespace(&objects::typed(value)?).map_err(error)?;
                self.namespaces.insert(ns.name.clone(), origin, ns);
            }
            Kind::Service => {
                let api: core::Service = objects::namespaced(value)?;
                let svc = convert::service(&api).map_err(error)?;
                self.services.insert(svc.key.clone(), origin, (api, svc));
            }
            // With `noendpoints` there are no slices at all, so broken ones are not reported.
            Kind::EndpointSlice if !self.options.endpoint_slices => return Ok(false),
            Kind::EndpointSlice => {
                let api = objects::namespaced(value)?;
                match convert::endpoint_slice(&api).map_err(error)? {
                    Some(slice) => self.slices.insert(slice.key.clone(), origin, slice),
                    None => return Ok(false),
                }
            }
            Kind::Pod => {
                let api: core::Pod = objects::namespaced(value)?;
                let pod = convert::pod(&api).map_err(error)?;
                self.pods.insert(pod.key.clone(), origin, (api, pod));
            }
        }
        Ok(true)
    }

    /// Adds the slices the EndpointSlice controller would write for every Service with a
    /// selector that has no slice of its own among the manifests.
    pub fn derive_endpoint_slices(&mut self, report: &mut LoadReport) {
        let written: HashSet<(&str, &str)> = self
            .slices
            .values()
            .map(|(_, s)| (&*s.key.namespace, &*s.service_name))
            .collect();
        // Every Pod counts here, whatever the scope of Pods kept in the state.
        let pods: Vec<&core::Pod> = self.pods.values().map(|(_, (api, _))| api).collect();
        let mut derived = Vec::new();
        for (origin, (api, svc)) in self.services.values() {
            if written.contains(&(&*svc.key.namespace, &*svc.key.name)) {
                continue;
            }
            for slice in derive::endpoint_slices(api, pods.iter().copied()) {
                match convert::endpoint_slice(&slice) {
                    Ok(Some(slice)) => derived.push((origin.clone(), slice)),
                    // Derived slices always carry the service-name label and an IP family.
                    Ok(None) => {}
                    Err(e) => report
                        .errors
                        .push(origin.error(format!("EndpointSlice derived for {}: {e}", svc.key))),
                }
            }
        }
        for (origin, slice) in derived {
            self.slices.insert(slice.key.clone(), &origin, slice);
        }
    }

    /// Replaces every collection of `state` with this load; returns whether anything changed.
    pub fn replace(self, state: &mut ClusterState) -> bool {
        let namespaces = self.namespaces();
        let options = self.options;
        let pods = self
            .pods
            .into_values()
            .map(|(_, (_, pod))| pod)
            .filter(|pod| in_scope(&options.pods, pod));
        // `|`, not `||`: each collection must be replaced whether or not another one changed.
        state.namespaces.replace(namespaces)
            | state.services.replace(
                self.services
                    .into_values()
                    .map(|(_, (_, svc))| (svc.key.clone(), svc)),
            )
            | state.slices.replace(
                self.slices
                    .into_values()
                    .map(|(_, slice)| (slice.key.clone(), slice)),
            )
            | state.pods.replace(pods.map(|pod| (pod.key.clone(), pod)))
    }

    /// The declared Namespaces, plus every namespace an object is in, plus `default`, which
    /// every cluster has: in a cluster, an object cannot exist in a namespace that does not.
    fn namespaces(&self) -> BTreeMap<Arc<str>, Namespace> {
        let mut namespaces: BTreeMap<Arc<str>, Namespace> = self
            .namespaces
            .values()
            .map(|(_, ns)| (ns.name.clone(), ns.clone()))
            .collect();
        let referenced = self
            .services
            .keys()
            .chain(self.slices.keys())
            .chain(self.pods.keys())
            .map(|key| key.namespace.clone())
            .chain([Arc::from(DEFAULT_NAMESPACE)]);
        for name in referenced {
            namespaces.entry(name.clone()).or_insert_with(|| Namespace {
                name,
                labels: BTreeMap::new(),
            });
        }
        namespaces
    }
}

fn in_scope(scope: &PodScope, pod: &Pod) -> bool {
    match scope {
        PodScope::None => false,
        PodScope::Node(node) => pod.node_name.as_ref() == Some(node),
        PodScope::All => true,
    }
}

/// Objects of one kind by key, each with the place it was read from.
struct Keyed<K, V>(BTreeMap<K, (Origin, V)>);

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<K: Ord + fmt::Display, V> Keyed<K, V> {
    /// Adds an object. A key defined twice keeps the later definition, as applying the files in
    /// order would, and is worth a warning: one of the two is likely a mistake.
    fn insert(&mut self, key: K, origin: &Origin, value: V) {
        match self.0.entry(key) {
            Entry::Occupied(mut entry) => {
                tracing::warn!(
                    key = %entry.key(),
                    first = %entry.get().0,
                    second = %origin,
                    "object defined twice in the manifests; using the second"
                );
                entry.insert((origin.clone(), value));
            }
            Entry::Vacant(entry) => {
                entry.insert((origin.clone(), value));
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.keys()
    }

    fn values(&self) -> impl Iterator<Item = &(Origin, V)> {
        self.0.values()
    }

    fn into_values(self) -> impl Iterator<Item = (Origin, V)> {
        self.0.into_values()
    }
}

//! Folding watch events into the [`ClusterState`]: the part of the API server source that
//! needs no network, so that it can be tested with synthetic events.
//!
//! A (re)list (`Init`, `InitApply`..., `InitDone`) is buffered per kind and swapped in with
//! [`Collection::replace`]: objects deleted while the watch was down disappear, and no snapshot
//! ever shows a half-listed kind.

use std::{collections::HashSet, hash::Hash, sync::Arc};

use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use kube::{api::PartialObjectMeta, runtime::watcher::Event};

use crate::{
    ClusterState, Collection, PodScope, Snapshot, SourceOptions,
    convert::{self, ConvertError},
    model::{EndpointSlice, Namespace, ObjectKey, Pod, Service},
};

/// A kind of object the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
}

impl Kind {
    /// The kinds `options` asks to watch.
    pub(crate) fn watched(options: &SourceOptions) -> impl Iterator<Item = Kind> {
        [
            Some(Kind::Namespace),
            Some(Kind::Service),
            options.endpoint_slices.then_some(Kind::EndpointSlice),
            (options.pods != PodScope::None).then_some(Kind::Pod),
        ]
        .into_iter()
        .flatten()
    }

    /// The API resource name (`endpointslices`), for logs and the `resource` metric label.
    pub(crate) fn resource(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
        }
    }

    /// The object kind (`EndpointSlice`), for the `kind` metric label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
        }
    }
}

/// One event of one of the watches.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "an event is moved once, from its watcher to the driver; boxing costs an allocation each"
)]
pub(crate) enum Update {
    Namespace(Event<PartialObjectMeta<core::Namespace>>),
    Service(Event<core::Service>),
    EndpointSlice(Event<discovery::EndpointSlice>),
    Pod(Event<core::Pod>),
}

impl Update {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Update::Namespace(_) => Kind::Namespace,
            Update::Service(_) => Kind::Service,
            Update::EndpointSlice(_) => Kind::EndpointSlice,
            Update::Pod(_) => Kind::Pod,
        }
    }

    /// Whether the event proves that the API server answered. `Init` does not: the watcher
    /// emits it before it sends its first list request.
    pub(crate) fn is_from_server(&self) -> bool {
        fn not_init<K>(event: &Event<K>) -> bool {
            !matches!(event, Event::Init)
        }
        match self {
            Update::Namespace(e) => not_init(e),
            Update::Service(e) => not_init(e),
            Update::EndpointSlice(e) => not_init(e),
            Update::Pod(e) => not_init(e),
        }
    }
}

/// An API type the source watches, and how its objects land in the model.
pub(crate) trait Watchable: Sized {
    type Key: Clone + Eq + Hash;
    type Model: Clone + PartialEq;
    const KIND: Kind;

    /// Wraps an event of this type for the merged stream.
    fn update(event: Event<Self>) -> Update;

    /// The key from metadata alone, so that a delete never depends on the object converting.
    fn key(&self) -> Option<Self::Key>;
    /// `Ok(None)` for an object svcnet does not serve.
    fn convert(&self) -> Result<Option<Self::Model>, ConvertError>;
    fn model_key(model: &Self::Model) -> &Self::Key;
    fn collection(state: &mut ClusterState) -> &mut Collection<Self::Key, Self::Model>;
}

fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey::new(meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// Namespaces are watched as metadata only; the model needs nothing else.
impl Watchable for PartialObjectMeta<core::Namespace> {
    type Key = Arc<str>;
    type Model = Namespace;
    const KIND: Kind = Kind::Namespace;

    fn update(event: Event<Self>) -> Update {
        Update::Namespace(event)
    }

    fn key(&self) -> Option<Arc<str>> {
        self.metadata.name.as_deref().map(Arc::from)
    }

    fn convert(&self) -> Result<Option<Namespace>, ConvertError> {
        let name = self.key().ok_or(ConvertError::MissingMeta {
            kind: "Namespace",
            field: "name",
        })?;
        Ok(Some(Namespace {
            name,
            labels: self.metadata.labels.clone().unwrap_or_default(),
        }))
    }

    fn model_key(model: &Namespace) -> &Arc<str> {
        &model.name
    }

    fn collection(state: &mut ClusterState) -> &mut Collection<Arc<str>, Namespace> {
        &mut state.namespaces
    }
}

impl Watchable for core::Service {
    type Key = ObjectKey;
    type Model = Service;
    const KIND: Kind = Kind::Service;

    fn update(event: Event<Self>) -> Update {
        Update::Service(event)
    }

    fn key(&self) -> Option<ObjectKey> {
        object_key(&self.metadata)
    }

    fn convert(&self) -> Result<Option<Service>, ConvertError> {
        convert::service(self).map(Some)
    }

    fn model_key(model: &Service) -> &ObjectKey {
        &model.key
    }

    fn collection(state: &mut ClusterState) -> &mut Collection<ObjectKey, Service> {
        &mut state.services
    }
}

impl Watchable for discovery::EndpointSlice {
    type Key = ObjectKey;
    type Model = EndpointSlice;
    const KIND: Kind = Kind::EndpointSlice;

    fn update(event: Event<Self>) -> Update {
        Update::EndpointSlice(event)
    }

    fn key(&self) -> Option<ObjectKey> {
        object_key(&self.metadata)
    }

    fn convert(&self) -> Result<Option<EndpointSlice>, ConvertError> {
        convert::endpoint_slice(self)
    }

    fn model_key(model: &EndpointSlice) -> &ObjectKey {
        &model.key
    }

    fn collection(state: &mut ClusterState) -> &mut Collection<ObjectKey, EndpointSlice> {
        &mut state.slices
    }
}

impl Watchable for core::Pod {
    type Key = ObjectKey;
    type Model = Pod;
    const KIND: Kind = Kind::Pod;

    fn update(event: Event<Self>) -> Update {
        Update::Pod(event)
    }

    fn key(&self) -> Option<ObjectKey> {
        object_key(&self.metadata)
    }

    fn convert(&self) -> Result<Option<Pod>, ConvertError> {
        convert::pod(self).map(Some)
    }

    fn model_key(model: &Pod) -> &ObjectKey {
        &model.key
    }

    fn collection(state: &mut ClusterState) -> &mut Collection<ObjectKey, Pod> {
        &mut state.pods
    }
}

/// The watch of one kind.
struct Tracker<W: Watchable> {
    /// Whether the first list finished; a kind that is not watched has nothing to wait for.
    listed: bool,
    /// Objects of the (re)list in progress, swapped in at `InitDone`.
    relist: Vec<(W::Key, W::Model)>,
    /// Keys of the (re)list in progress whose object failed to convert.
    rejected: HashSet<W::Key>,
}

impl<W: Watchable> Tracker<W> {
    fn new(watched: bool) -> Self {
        Self {
            listed: !watched,
            relist: Vec::new(),
            rejected: HashSet::new(),
        }
    }

    /// Applies one event; returns whether the model changed. On `Err` the object was skipped.
    fn apply(&mut self, state: &mut ClusterState, event: Event<W>) -> Result<bool, ConvertError> {
        match event {
            // The watcher restarts a list from scratch after a failed page, so `Init` may come
            // again before `InitDone`: drop whatever the broken attempt buffered.
            Event::Init => {
                self.relist.clear();
                self.rejected.clear();
                Ok(false)
            }
            Event::InitApply(object) => {
                self.buffer(&object)?;
                Ok(false)
            }
            Event::InitDone => Ok(self.finish_relist(W::collection(state))),
            Event::Apply(object) => upsert(W::collection(state), &object),
            Event::Delete(object) => Ok(object.key().is_some_and(|key| W::collection(state).delete(&key))),
        }
    }

    fn buffer(&mut self, object: &W) -> Result<(), ConvertError> {
        match object.convert() {
            Ok(Some(model)) => self.relist.push((W::model_key(&model).clone(), model)),
            Ok(None) => {}
            Err(error) => {
                self.rejected.extend(object.key());
                return Err(error);
            }
        }
        Ok(())
    }

    fn finish_relist(&mut self, collection: &mut Collection<W::Key, W::Model>) -> bool {
        self.listed = true;
        let mut listed = std::mem::take(&mut self.relist);
        let rejected = std::mem::take(&mut self.rejected);
        // An object that is malformed now keeps its last good version, as on an `Apply`.
        if !rejected.is_empty() {
            listed.extend(
                collection
                    .values()
                    .filter(|model| rejected.contains(W::model_key(model)))
                    .map(|model| (W::model_key(model).clone(), W::Model::clone(model))),
            );
        }
        collection.replace(listed)
    }
}

/// Inserts or updates an object, or removes it if it no longer qualifies (an EndpointSlice whose
/// service-name label was removed).
///
/// A malformed object is skipped and its previous version stays: the API server validates
/// objects, so a conversion failure is most likely a field svcnet does not understand, and the
/// last good state keeps traffic flowing where dropping the object would cut it off.
fn upsert<W: Watchable>(
    collection: &mut Collection<W::Key, W::Model>,
    object: &W,
) -> Result<bool, ConvertError> {
    Ok(match object.convert()? {
        Some(model) => collection.apply(W::model_key(&model).clone(), model),
        None => object.key().is_some_and(|key| collection.delete(&key)),
    })
}

/// The cluster state as the watches have built it so far.
pub(crate) struct Watched {
    state: ClusterState,
    namespaces: Tracker<PartialObjectMeta<core::Namespace>>,
    services: Tracker<core::Service>,
    slices: Tracker<discovery::EndpointSlice>,
    pods: Tracker<core::Pod>,
}

impl Watched {
    pub(crate) fn new(options: &SourceOptions) -> Self {
        let watched = |kind| Kind::watched(options).any(|k| k == kind);
        Self {
            state: ClusterState::default(),
            namespaces: Tracker::new(watched(Kind::Namespace)),
            services: Tracker::new(watched(Kind::Service)),
            slices: Tracker::new(watched(Kind::EndpointSlice)),
            pods: Tracker::new(watched(Kind::Pod)),
        }
    }

    /// Applies one event; returns whether the model changed. On `Err` a malformed object was
    /// skipped and everything else is as before.
    pub(crate) fn apply(&mut self, update: Update) -> Result<bool, ConvertError> {
        let state = &mut self.state;
        match update {
            Update::Namespace(event) => self.namespaces.apply(state, event),
            Update::Service(event) => self.services.apply(state, event),
            Update::EndpointSlice(event) => self.slices.apply(state, event),
            Update::Pod(event) => self.pods.apply(state, event),
        }
    }

    /// Whether every watched kind finished its first list. A later relist does not unset it:
    /// the previous state is served until the relist is swapped in.
    pub(crate) fn synced(&self) -> bool {
        self.namespaces.listed && self.services.listed && self.slices.listed && self.pods.listed
    }

    /// Builds the snapshot to publish; `changed` says whether the model changed since the last
    /// one, which bumps the SOA serial.
    pub(crate) fn snapshot(&mut self, changed: bool) -> Snapshot {
        self.state.touch(changed);
        self.state.snapshot(self.synced())
    }
}

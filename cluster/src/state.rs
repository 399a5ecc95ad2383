//! The mutable side: every object a source has seen, by key, from which snapshots are built.
//!
//! Sources convert API objects as they arrive (so a malformed object is reported once, at the
//! event that brought it) and apply them here; the snapshot is rebuilt after a batch of
//! changes, never per object.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    model::{EndpointSlice, Namespace, ObjectKey, Pod, Service},
    snapshot::{Snapshot, SnapshotBuilder},
};

/// The objects of one kind, by key.
#[derive(Debug)]
pub struct Collection<K, V> {
    objects: HashMap<K, Arc<V>>,
}

impl<K, V> Default for Collection<K, V> {
    fn default() -> Self {
        Self {
            objects: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, V: PartialEq> Collection<K, V> {
    /// Inserts or replaces an object; returns whether anything changed.
    pub fn apply(&mut self, key: K, value: V) -> bool {
        match self.objects.get(&key) {
            Some(old) if **old == value => false,
            _ => {
                self.objects.insert(key, Arc::new(value));
                true
            }
        }
    }

    /// Removes an object; returns whether it was there.
    pub fn delete(&mut self, key: &K) -> bool {
        self.objects.remove(key).is_some()
    }

    /// Replaces the whole collection (after a relist); returns whether anything changed.
    pub fn replace(&mut self, objects: impl IntoIterator<Item = (K, V)>) -> bool {
        let new: HashMap<K, V> = objects.into_iter().collect();
        let changed = new.len() != self.objects.len()
            || new
                .iter()
                .any(|(k, v)| self.objects.get(k).is_none_or(|old| **old != *v));
        if changed {
            self.objects = new.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        }
        changed
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<V>> {
        self.objects.values()
    }
}

/// Everything the sources know about the cluster.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub namespaces: Collection<Arc<str>, Namespace>,
    pub services: Collection<ObjectKey, Service>,
    pub slices: Collection<ObjectKey, EndpointSlice>,
    pub pods: Collection<ObjectKey, Pod>,
    /// Unix time of the last change applied, the SOA serial.
    serial: u32,
}

impl ClusterState {
    /// Records that a change was applied now. Callers pass the result of `apply`/`delete`/
    /// `replace` so that a no-op update leaves the serial alone (as CoreDNS does).
    pub fn touch(&mut self, changed: bool) -> bool {
        if changed {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Serials must grow even when two changes land within one second.
            self.serial = u32::try_from(now)
                .unwrap_or(u32::MAX)
                .max(self.serial.wrapping_add(1));
        }
        changed
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Builds the indexed snapshot of the current state.
    pub fn snapshot(&self, synced: bool) -> Snapshot {
        let mut builder = SnapshotBuilder::new(synced, self.serial);
        for ns in self.namespaces.values() {
            builder.namespace(ns);
        }
        // Keep the order stable so that "first Service wins" on a shared ClusterIP is
        // deterministic across rebuilds.
        let mut services: Vec<_> = self.services.values().collect();
        services.sort_by(|a, b| a.key.cmp(&b.key));
        for svc in services {
            builder.service(svc);
        }
        let mut slices: Vec<_> = self.slices.values().collect();
        slices.sort_by(|a, b| a.key.cmp(&b.key));
        for slice in slices {
            builder.slice(slice);
        }
        for pod in self.pods.values() {
            builder.pod(pod);
        }
        builder.build()
    }
}

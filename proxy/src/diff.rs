//! From the state last applied to the desired one: the element deletes and adds (and new
//! load-balancing chains) that turn one into the other, as one transaction.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use svcnet_cluster::model::Protocol;

use crate::{
    desired::{Desired, EntryPoint, FamilyState},
    nft::{Command, Element, Family, Transaction},
    ruleset::{
        self, AFFINITY, FIREWALL_ALLOW, FIREWALL_IPS, HAIRPIN, NO_ENDPOINTS, PROTOCOLS, SERVICE_IPS,
        affinity_map, endpoints_map,
    },
};

/// The transaction that turns the tables holding `applied` into ones holding `desired`, or
/// `None` when that takes more than element changes (the cluster CIDRs changed, which changes
/// the rules of every load-balancing chain): then only a full replace will do.
///
/// Chains are added but never deleted; see [`Desired::keeping_chains_of`] for the state the
/// tables are in afterwards.
pub fn diff(applied: &Desired, desired: &Desired) -> Option<Transaction> {
    let mut tx = Transaction::new();
    for family in Family::ALL {
        let (old, new) = (applied.family(family), desired.family(family));
        if old.cluster_cidrs != new.cluster_cidrs {
            return None;
        }
        // Chains first: the map elements added below jump to them.
        for lb in new.lb_chains.difference(&old.lb_chains) {
            for command in ruleset::lb_chain(family, *lb, !new.cluster_cidrs.is_empty()) {
                tx.push(family, command);
            }
        }
        for affinity in new.affinity_chains.difference(&old.affinity_chains) {
            for command in ruleset::affinity_chain(family, *affinity) {
                tx.push(family, command);
            }
        }
        // In the same transaction as the endpoint's removal, so no new connection is ever sent
        // back to it.
        for protocol in affinity_to_forget(old, new) {
            tx.push(
                family,
                Command::FlushMap {
                    name: affinity_map(protocol),
                },
            );
        }

        // A key whose value changed is deleted and added again: adding an element over an
        // existing key with other data fails in the kernel (EBUSY). Deletes go first so the
        // re-add finds the key free: `set_changes` pushes them, and returns the adds for later.
        let services = set_changes(
            &mut tx,
            family,
            SERVICE_IPS,
            map_changes(&old.service_ips, &new.service_ips),
            ruleset::service_ip,
        );
        let refused = set_changes(
            &mut tx,
            family,
            NO_ENDPOINTS,
            map_changes(&old.no_endpoints, &new.no_endpoints),
            ruleset::no_endpoint,
        );
        let (endpoints_gone, endpoints_new) = map_changes(&old.endpoints, &new.endpoints);
        let endpoints = PROTOCOLS.map(|protocol| {
            set_changes(
                &mut tx,
                family,
                endpoints_map(protocol),
                (
                    of_protocol(&endpoints_gone, protocol),
                    of_protocol(&endpoints_new, protocol),
                ),
                |(k, v)| ruleset::endpoint(k, *v),
            )
        });
        let hairpin = set_changes(
            &mut tx,
            family,
            HAIRPIN,
            set_difference(&old.hairpin, &new.hairpin),
            |ip| ruleset::hairpin(*ip),
        );
        let affinity = set_changes(
            &mut tx,
            family,
            AFFINITY,
            map_changes(&old.affinity, &new.affinity),
            ruleset::affinity,
        );
        let firewall_ips = set_changes(
            &mut tx,
            family,
            FIREWALL_IPS,
            set_difference(&old.firewall, &new.firewall),
            ruleset::firewall_ip,
        );
        let firewall_allow = set_changes(
            &mut tx,
            family,
            FIREWALL_ALLOW,
            set_difference(&old.firewall_allow, &new.firewall_allow),
            ruleset::firewall_allow,
        );

        // Endpoints before the dispatch elements that lead to them, for readability only: the
        // transaction is atomic either way.
        let adds = [hairpin, affinity, firewall_allow, firewall_ips, services, refused];
        for command in endpoints.into_iter().chain(adds) {
            tx.push(family, command);
        }
    }
    Some(tx)
}

/// The protocols whose affinity map may send a client to an endpoint that is no longer one of
/// its entry point's: an entry point that had affinity lost an endpoint, its affinity, or went.
/// The map's elements are added by the kernel, so svcnet cannot delete only the clients of
/// that endpoint without reading the map; forgetting every client of the protocol is safe.
fn affinity_to_forget(old: &FamilyState, new: &FamilyState) -> BTreeSet<Protocol> {
    let endpoints = |state: &FamilyState, entry: &EntryPoint| -> BTreeSet<SocketAddr> {
        state
            .endpoints
            .range((*entry, 0)..=(*entry, u32::MAX))
            .map(|(_, addr)| *addr)
            .collect()
    };
    old.affinity
        .keys()
        .filter(|entry| {
            !new.affinity.contains_key(entry) || !endpoints(old, entry).is_subset(&endpoints(new, entry))
        })
        .map(|entry| entry.protocol)
        .collect()
}

/// Pushes the command that deletes the `gone` elements of `set` (by key) and returns the one
/// that adds the `new` ones, both rendered by `render`.
fn set_changes<T>(
    tx: &mut Transaction,
    family: Family,
    set: &'static str,
    (gone, new): (Vec<T>, Vec<T>),
    render: impl Fn(T) -> Element,
) -> Command {
    tx.push(
        family,
        Command::DeleteElements {
            set,
            elements: gone.into_iter().map(|e| Element::key(render(e).key)).collect(),
        },
    );
    Command::AddElements {
        set,
        elements: new.into_iter().map(render).collect(),
    }
}

/// The endpoint changes of one protocol's map.
fn of_protocol<'a>(
    changes: &[(&'a (EntryPoint, u32), &'a SocketAddr)],
    protocol: Protocol,
) -> Vec<(&'a (EntryPoint, u32), &'a SocketAddr)> {
    changes
        .iter()
        .copied()
        .filter(|((entry, _), _)| entry.protocol == protocol)
        .collect()
}

/// Elements of `old` not in `new`, and of `new` not in `old`.
fn set_difference<'a, T: Ord>(old: &'a BTreeSet<T>, new: &'a BTreeSet<T>) -> (Vec<&'a T>, Vec<&'a T>) {
    (old.difference(new).collect(), new.difference(old).collect())
}

/// Entries of `old` to delete (gone, or holding another value now) and entries of `new` to
/// add (new, or changed).
type Changes<'a, K, V> = (Vec<(&'a K, &'a V)>, Vec<(&'a K, &'a V)>);

fn map_changes<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> Changes<'a, K, V> {
    let gone = old.iter().filter(|(k, v)| new.get(*k) != Some(*v)).collect();
    let added = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).collect();
    (gone, added)
}

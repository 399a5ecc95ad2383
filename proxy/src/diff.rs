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
        // re-add finds the key free.
        let (services_gone, services_new) = map_changes(&old.service_ips, &new.service_ips);
        let (refused_gone, refused_new) = map_changes(&old.no_endpoints, &new.no_endpoints);
        let (endpoints_gone, endpoints_new) = map_changes(&old.endpoints, &new.endpoints);
        let (affinity_gone, affinity_new) = map_changes(&old.affinity, &new.affinity);
        let deletes = |set, elements: Vec<Element>| Command::DeleteElements {
            set,
            elements: elements.into_iter().map(|e| Element::key(e.key)).collect(),
        };
        tx.push(
            family,
            deletes(
                SERVICE_IPS,
                services_gone.into_iter().map(ruleset::service_ip).collect(),
            ),
        );
        tx.push(
            family,
            deletes(
                NO_ENDPOINTS,
                refused_gone.into_iter().map(ruleset::no_endpoint).collect(),
            ),
        );
        for protocol in PROTOCOLS {
            tx.push(
                family,
                deletes(
                    endpoints_map(protocol),
                    endpoints_gone
                        .iter()
                        .filter(|((entry, _), _)| entry.protocol == protocol)
                        .map(|(k, v)| ruleset::endpoint(k, **v))
                        .collect(),
                ),
            );
        }
        tx.push(
            family,
            deletes(
                HAIRPIN,
                old.hairpin
                    .difference(&new.hairpin)
                    .map(|ip| ruleset::hairpin(*ip))
                    .collect(),
            ),
        );
        tx.push(
            family,
            deletes(
                AFFINITY,
                affinity_gone.into_iter().map(ruleset::affinity).collect(),
            ),
        );
        tx.push(
            family,
            deletes(
                FIREWALL_IPS,
                old.firewall
                    .difference(&new.firewall)
                    .map(ruleset::firewall_ip)
                    .collect(),
            ),
        );
        tx.push(
            family,
            deletes(
                FIREWALL_ALLOW,
                old.firewall_allow
                    .difference(&new.firewall_allow)
                    .map(ruleset::firewall_allow)
                    .collect(),
            ),
        );

        // Endpoints before the dispatch elements that lead to them, for readability only: the
        // transaction is atomic either way.
        let adds = |set, elements| Command::AddElements { set, elements };
        for protocol in PROTOCOLS {
            tx.push(
                family,
                adds(
                    endpoints_map(protocol),
                    endpoints_new
                        .iter()
                        .filter(|((entry, _), _)| entry.protocol == protocol)
                        .map(|(k, v)| ruleset::endpoint(k, **v))
                        .collect(),
                ),
            );
        }
        tx.push(
            family,
            adds(
                HAIRPIN,
                new.hairpin
                    .difference(&old.hairpin)
                    .map(|ip| ruleset::hairpin(*ip))
                    .collect(),
            ),
        );
        tx.push(
            family,
            adds(
                AFFINITY,
                affinity_new.into_iter().map(ruleset::affinity).collect(),
            ),
        );
        tx.push(
            family,
            adds(
                FIREWALL_ALLOW,
                new.firewall_allow
                    .difference(&old.firewall_allow)
                    .map(ruleset::firewall_allow)
                    .collect(),
            ),
        );
        tx.push(
            family,
            adds(
                FIREWALL_IPS,
                new.firewall
                    .difference(&old.firewall)
                    .map(ruleset::firewall_ip)
                    .collect(),
            ),
        );
        tx.push(
            family,
            adds(
                SERVICE_IPS,
                services_new.into_iter().map(ruleset::service_ip).collect(),
            ),
        );
        tx.push(
            family,
            adds(
                NO_ENDPOINTS,
                refused_new.into_iter().map(ruleset::no_endpoint).collect(),
            ),
        );
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

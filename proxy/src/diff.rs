//! From the state last applied to the desired one: the element deletes and adds (and new
//! load-balancing chains) that turn one into the other, as one transaction.

use std::collections::BTreeMap;

use crate::{
    desired::Desired,
    nft::{Command, Element, Family, Transaction},
    ruleset::{self, HAIRPIN, NO_ENDPOINTS, PROTOCOLS, SERVICE_IPS, endpoints_map},
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

        // A key whose value changed is deleted and added again: adding an element over an
        // existing key with other data fails in the kernel (EBUSY). Deletes go first so the
        // re-add finds the key free.
        let (services_gone, services_new) = map_changes(&old.service_ips, &new.service_ips);
        let (refused_gone, refused_new) = map_changes(&old.no_endpoints, &new.no_endpoints);
        let (endpoints_gone, endpoints_new) = map_changes(&old.endpoints, &new.endpoints);
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

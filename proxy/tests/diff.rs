//! Diffs: small changes give small transactions, and applying diff(a, b) to tables holding a
//! gives tables holding b, checked against a model of the kernel's strictness (deleting a
//! missing element or adding an existing key fails).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use svcnet_cluster::model::{Protocol, Service, ServiceType, TrafficPolicy};
use svcnet_proxy::{
    Desired, desired,
    diff::diff,
    nft::{Command, Family, Transaction},
    ruleset,
};

use crate::common::*;

#[test]
fn no_change_is_an_empty_transaction() {
    let a = web_state(&["10.244.1.1"]);
    assert!(diff(&a, &a.clone()).unwrap().is_empty());
}

#[test]
fn one_endpoint_moving_is_one_delete_and_one_add() {
    let a = web_state(&["10.244.1.1", "10.244.1.2"]);
    let b = web_state(&["10.244.1.1", "10.244.1.3"]);
    let tx = diff(&a, &b).unwrap();
    assert_eq!(
        tx.render(),
        "delete element ip svcnet endpoints-tcp {\n\
         \t10.96.0.1 . tcp . 80 . 1,\n\
         }\n\
         add element ip svcnet endpoints-tcp {\n\
         \t10.96.0.1 . tcp . 80 . 1 : 10.244.1.3 . 8080,\n\
         }\n"
    );
    assert_eq!(tx.element_counts(), (1, 1));
}

#[test]
fn a_new_endpoint_count_adds_its_chain_once() {
    let a = web_state(&["10.244.1.1"]);
    let b = web_state(&["10.244.1.1", "10.244.1.2"]);
    let tx = diff(&a, &b).unwrap();
    assert_eq!(
        tx.render(),
        "add chain ip svcnet lb-tcp-2\n\
         add rule ip svcnet lb-tcp-2 ip saddr != @cluster-cidrs meta mark set meta mark | 0x4000\n\
         add rule ip svcnet lb-tcp-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints-tcp\n\
         delete element ip svcnet service-ips {\n\
         \t10.96.0.1 . tcp . 80,\n\
         }\n\
         add element ip svcnet endpoints-tcp {\n\
         \t10.96.0.1 . tcp . 80 . 1 : 10.244.1.2 . 8080,\n\
         }\n\
         add element ip svcnet service-ips {\n\
         \t10.96.0.1 . tcp . 80 comment \"ns/web\" : goto lb-tcp-2,\n\
         }\n"
    );
    // lb-tcp-1 stays (a chain is never deleted by a partial sync); going back needs no chain.
    let applied = b.clone().keeping_chains_of(&a);
    let back = diff(&applied, &a).unwrap();
    assert!(!back.render().contains("add chain"), "{back}");
}

#[test]
fn a_change_of_cluster_cidrs_needs_a_full_replace() {
    let a = web_state(&["10.244.1.1"]);
    let mut b = a.clone();
    b.ipv4.cluster_cidrs.clear();
    assert_eq!(diff(&a, &b), None);
}

/// Set or map name -> element key -> the element as rendered (data and comment included).
type Model = BTreeMap<(Family, &'static str), BTreeMap<String, String>>;

/// What a table holds after `tx` runs on tables holding `model` and `chains`; panics where the
/// kernel would refuse the transaction.
fn run(model: &mut Model, chains: &mut BTreeSet<(Family, String)>, tx: &Transaction) {
    for (family, command) in tx.commands() {
        match command {
            Command::AddChain { name, .. } => {
                assert!(chains.insert((*family, name.clone())), "chain {name} added twice");
            }
            Command::AddElements { set, elements } => {
                let set = model.entry((*family, set)).or_default();
                for e in elements {
                    let key = svcnet_proxy::nft::Element::key(e.key.clone()).to_string();
                    assert!(set.insert(key.clone(), e.to_string()).is_none(), "{key} exists");
                }
            }
            Command::DeleteElements { set, elements } => {
                let set = model.entry((*family, set)).or_default();
                for e in elements {
                    assert!(e.data.is_empty() && e.comment.is_none(), "delete by key only");
                    let key = e.to_string();
                    assert!(set.remove(&key).is_some(), "{key} is missing");
                }
            }
            Command::AddRule { chain, .. } => {
                assert!(
                    chains.contains(&(*family, chain.clone())),
                    "rule in missing chain {chain}"
                );
            }
            // Elements the kernel added from the packet path; the model holds none.
            Command::FlushMap { name } => {
                model.remove(&(*family, *name));
            }
            Command::AddTable | Command::DeleteTable | Command::AddSet { .. } => {}
        }
    }
    model.retain(|_, elements| !elements.is_empty());
}

fn loaded(d: &Desired) -> (Model, BTreeSet<(Family, String)>) {
    let (mut model, mut chains) = (Model::new(), BTreeSet::new());
    run(&mut model, &mut chains, &ruleset::full(d));
    (model, chains)
}

/// Small pools, so that services share addresses, ports and endpoint counts.
fn arb_cluster() -> impl Strategy<Value = (Vec<Service>, Vec<svcnet_cluster::model::EndpointSlice>)> {
    let svc = (
        0..4u8, // cluster IP (v4 .1-.4, or v6 when 3)
        prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
        prop::sample::select(vec![80u16, 443]),
        any::<bool>(),                                                // NodePort
        any::<bool>(),                                                // eTP Local
        any::<bool>(),                                                // iTP Local
        prop::option::of(0..2u8),                                     // an external IP
        prop::collection::vec((0..6u8, any::<bool>(), 0..4u8), 0..5), // endpoints
    );
    prop::collection::vec(svc, 0..6).prop_map(|specs| {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for (i, (ipn, protocol, number, is_node_port, etp, itp, ext, eps)) in specs.into_iter().enumerate() {
            let v6 = ipn == 3;
            let name = format!("ns/s{i}");
            let cluster_ip = if v6 {
                "fd00:96::1".to_owned()
            } else {
                format!("10.96.0.{ipn}")
            };
            let p = if is_node_port {
                node_port(None, protocol, number, 30000 + number)
            } else {
                port(None, protocol, number)
            };
            let policy = |local| {
                if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                }
            };
            services.push(Service {
                service_type: if is_node_port {
                    ServiceType::NodePort
                } else {
                    ServiceType::ClusterIp
                },
                external_ips: ext
                    .map(|n| {
                        ip(&if v6 {
                            format!("2001:db8::{n}")
                        } else {
                            format!("192.0.2.{n}")
                        })
                    })
                    .into_iter()
                    .collect(),
                external_traffic_policy: policy(etp),
                internal_traffic_policy: policy(itp),
                ..service(&name, &[&cluster_ip], vec![p])
            });
            let endpoints = eps
                .into_iter()
                .map(|(n, local, state)| {
                    let addr = if v6 {
                        format!("fd00:244::{n}")
                    } else {
                        format!("10.244.1.{n}")
                    };
                    let state =
                        [State::Ready, State::Unready, State::Draining, State::Gone][usize::from(state)];
                    endpoint(&addr, Some(if local { NODE } else { "node-b" }), state)
                })
                .collect();
            slices.push(slice(
                &format!("{name}-1"),
                &format!("s{i}"),
                &[(None, protocol, 8080)],
                endpoints,
            ));
        }
        (services, slices)
    })
}

fn desired_of((services, slices): (Vec<Service>, Vec<svcnet_cluster::model::EndpointSlice>)) -> Desired {
    desired(
        &snapshot(services, slices),
        &node(&["192.168.1.10", "fd00:1::10"], &["10.244.0.0/16"]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn applying_the_diff_gives_the_new_state(a in arb_cluster(), b in arb_cluster()) {
        let (a, b) = (desired_of(a), desired_of(b));
        let tx = diff(&a, &b).expect("same cluster CIDRs");
        let (mut model, mut chains) = loaded(&a);
        run(&mut model, &mut chains, &tx);
        let (want_model, want_chains) = loaded(&b);
        prop_assert_eq!(&model, &want_model);
        prop_assert!(chains.is_superset(&want_chains));

        // The state the sync loop records is what the tables now hold: diffing from it
        // again is a no-op, and diffing onwards works the same.
        let applied = b.clone().keeping_chains_of(&a);
        prop_assert!(diff(&applied, &b).unwrap().is_empty());
        let expected_chains: BTreeSet<_> = Family::ALL
            .iter()
            .flat_map(|f| applied.family(*f).lb_chains.iter().map(move |c| (*f, c.name())))
            .collect();
        let lb_chains: BTreeSet<_> = chains.iter().filter(|(_, n)| n.starts_with("lb-")).cloned().collect();
        prop_assert_eq!(lb_chains, expected_chains);
    }
}

/// `web` with `sessionAffinity: ClientIP`.
fn sticky_web(endpoints: &[&str]) -> Desired {
    let svc = Service {
        session_affinity: Some(std::time::Duration::from_secs(60)),
        ..web_service()
    };
    on_node(&web_with(svc, endpoints))
}

#[test]
fn losing_an_endpoint_of_an_affinity_entry_point_forgets_the_protocol_s_clients() {
    let flush = "flush map ip svcnet affinity-tcp";
    let two = sticky_web(&["10.244.1.1", "10.244.1.2"]);
    let one = sticky_web(&["10.244.1.2"]);
    let tx = diff(&two, &one).unwrap().render();
    assert!(tx.contains(flush), "{tx}");
    // A new endpoint keeps every recorded one valid; so does a Service without affinity.
    let tx = diff(&one, &two).unwrap().render();
    assert!(!tx.contains("flush"), "{tx}");
    let tx = diff(
        &web_state(&["10.244.1.1", "10.244.1.2"]),
        &web_state(&["10.244.1.2"]),
    )
    .unwrap()
    .render();
    assert!(!tx.contains("flush"), "{tx}");
    // Affinity turned off: its clients are forgotten too.
    let tx = diff(&one, &web_state(&["10.244.1.2"])).unwrap().render();
    assert!(tx.contains(flush), "{tx}");
    assert!(tx.contains("delete element ip svcnet affinity {"), "{tx}");
}

//! EndpointSlices for Services whose endpoints no manifest lists, derived from the Pods in the
//! directory as the Kubernetes EndpointSlice controller derives them in a cluster.
//!
//! The rules are those of `staging/src/k8s.io/endpointslice` (`utils.go`: `podToEndpoint`,
//! `getEndpointPorts`, `getAddressTypesForService`, `findPort`; `util/controller_utils.go`:
//! `ShouldPodBeInEndpoints`, `ShouldSetHostname`) and of `syncService` in
//! `pkg/controller/endpointslice`. Where the controller relies on a default the API server
//! fills in (a Service's `ipFamilies` and `targetPort`, every `protocol`), the default is
//! applied here, since manifests never went through the API server.
//!
//! Three differences, none visible to DNS or the proxy: a manifest directory has no Nodes, so
//! endpoints get no zone and no Pod is skipped for naming a missing Node; slices are not split
//! at 100 endpoints (readers treat all slices of a Service alike); and a Service without
//! endpoints gets no slice rather than the controller's empty placeholder.

use std::{collections::BTreeMap, net::Ipv6Addr};

use k8s_openapi::{
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use crate::convert::SERVICE_NAME_LABEL;

const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our `managed-by` value, so that derived slices are told apart from written ones.
const MANAGED_BY: &str = "svcnet-manifests";

/// The EndpointSlices the controller would write for `service`, given every Pod there is.
pub(super) fn endpoint_slices<'a>(
    service: &core::Service,
    pods: impl IntoIterator<Item = &'a core::Pod>,
) -> Vec<discovery::EndpointSlice> {
    let (Some(spec), Some(name), Some(namespace)) =
        (&service.spec, &service.metadata.name, &service.metadata.namespace)
    else {
        return Vec::new();
    };
    // `syncService` leaves ExternalName Services and Services without a selector alone: their
    // endpoints, if any, are written by hand.
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };

    let families = address_types(spec);
    let mut groups: Vec<Group> = Vec::new();
    for pod in pods {
        if pod.metadata.namespace.as_ref() != Some(namespace)
            || !selects(selector, pod)
            || !should_be_in_endpoints(pod)
        {
            continue;
        }
        let ports = endpoint_ports(spec, pod);
        for &family in &families {
            let endpoint = pod_to_endpoint(pod, service, family);
            if !endpoint.addresses.is_empty() {
                Group::add(&mut groups, family, &ports, endpoint);
            }
        }
    }

    let mut named: Vec<Family> = Vec::with_capacity(groups.len());
    let mut slices = Vec::with_capacity(groups.len());
    for group in groups {
        let index = named.iter().filter(|&&f| f == group.family).count();
        named.push(group.family);
        slices.push(group.into_slice(namespace, name, index));
    }
    slices
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// As `utilnet.IsIPv6String` sorts addresses: whatever is not IPv6 counts as IPv4.
    fn of(ip: &str) -> Self {
        if ip.parse::<Ipv6Addr>().is_ok() {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// A Service's `spec.ipFamilies` entry.
    fn from_ip_family(family: &str) -> Option<Self> {
        match family {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The endpoints of one family whose Pods resolved the Service's ports to the same numbers:
/// the controller keys slices by (address type, ports), so each group becomes its own slice.
struct Group {
    family: Family,
    ports: Vec<discovery::EndpointPort>,
    endpoints: Vec<discovery::Endpoint>,
}

impl Group {
    fn add(
        groups: &mut Vec<Group>,
        family: Family,
        ports: &[discovery::EndpointPort],
        endpoint: discovery::Endpoint,
    ) {
        match groups.iter_mut().find(|g| g.family == family && g.ports == ports) {
            Some(group) => group.endpoints.push(endpoint),
            None => groups.push(Group {
                family,
                ports: ports.to_vec(),
                endpoints: vec![endpoint],
            }),
        }
    }

    /// The controller names slices `<service>-<random>`; derived names must be the same on every
    /// load, so they count the groups of a family instead: `web-ipv4`, `web-ipv4-1`...
    fn into_slice(self, namespace: &str, service: &str, index: usize) -> discovery::EndpointSlice {
        let family = self.family.address_type().to_ascii_lowercase();
        let name = match index {
            0 => format!("{service}-{family}"),
            n => format!("{service}-{family}-{n}"),
        };
        discovery::EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([
                    (SERVICE_NAME_LABEL.to_owned(), service.to_owned()),
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                ])),
                ..ObjectMeta::default()
            },
            address_type: self.family.address_type().to_owned(),
            endpoints: self.endpoints,
            ports: Some(self.ports),
        }
    }
}

/// `getAddressTypesForService`: `spec.ipFamilies`, or else the family of the cluster IP, or else
/// (headless) both. The API server fills `ipFamilies` in from `clusterIPs`; a manifest usually
/// has neither, so the cluster IPs are read here the way the API server would default them.
fn address_types(spec: &core::ServiceSpec) -> Vec<Family> {
    let listed: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| Family::from_ip_family(f))
        .collect();
    let listed = if listed.is_empty() {
        cluster_ips(spec).map(Family::of).collect()
    } else {
        listed
    };
    let families = [Family::V4, Family::V6];
    if listed.is_empty() {
        families.to_vec()
    } else {
        families.into_iter().filter(|f| listed.contains(f)).collect()
    }
}

/// `spec.clusterIPs`, or the older `spec.clusterIP` alone; nothing for a headless Service.
fn cluster_ips(spec: &core::ServiceSpec) -> impl Iterator<Item = &str> {
    let ips = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.as_slice(),
        (_, Some(ip)) => std::slice::from_ref(ip),
        _ => &[],
    };
    ips.iter()
        .map(String::as_str)
        .filter(|ip| !ip.is_empty() && !ip.eq_ignore_ascii_case("none"))
}

/// A selector matches a Pod whose labels include every one of its key/value pairs.
fn selects(selector: &BTreeMap<String, String>, pod: &core::Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// `ShouldPodBeInEndpoints(pod, includeTerminating: true)`: Pods that finished (Succeeded or
/// Failed) or have no IP yet are left out; terminating Pods stay in, marked as such.
fn should_be_in_endpoints(pod: &core::Pod) -> bool {
    let terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    !terminal && !pod_ips(pod).is_empty()
}

/// `status.podIPs`, plus `status.podIP` when only that is set: the API server keeps the two in
/// step, hand-written manifests often set just the one.
fn pod_ips(pod: &core::Pod) -> Vec<&str> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())
        && !ips.contains(&ip)
    {
        ips.insert(0, ip);
    }
    ips
}

/// `IsPodReady`: the Pod's `Ready` condition is `True`.
fn is_pod_ready(pod: &core::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// `podToEndpoint`: the Pod's addresses of one family, its conditions and its identity.
fn pod_to_endpoint(pod: &core::Pod, service: &core::Service, family: Family) -> discovery::Endpoint {
    let serving = is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    // The controller: "ready" is never true for a terminating Pod unless the Service publishes
    // not-ready addresses. `serving` keeps the Pod's own readiness either way.
    let ready = publish_not_ready || (serving && !terminating);
    let spec = pod.spec.as_ref();
    discovery::Endpoint {
        addresses: pod_ips(pod)
            .into_iter()
            .filter(|ip| Family::of(ip) == family)
            .map(str::to_owned)
            .collect(),
        conditions: Some(discovery::EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(pod, service),
        node_name: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(core::ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..core::ObjectReference::default()
        }),
        ..discovery::Endpoint::default()
    }
}

/// `ShouldSetHostname`: a Pod is named in the Service's DNS only if it has a hostname and its
/// subdomain is this Service (in the Pod's namespace), as in a StatefulSet.
fn hostname(pod: &core::Pod, service: &core::Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    let subdomain_is_service = spec
        .subdomain
        .as_deref()
        .is_some_and(|s| Some(s) == service.metadata.name.as_deref());
    let same_namespace = pod.metadata.namespace == service.metadata.namespace;
    (subdomain_is_service && same_namespace).then(|| hostname.clone())
}

/// `getEndpointPorts`: each Service port with the number it has on this Pod. A port the Pod
/// cannot resolve is dropped for this Pod only.
fn endpoint_ports(spec: &core::ServiceSpec, pod: &core::Pod) -> Vec<discovery::EndpointPort> {
    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(discovery::EndpointPort {
                port: Some(find_port(pod, port)?),
                // The controller copies the name even when empty.
                name: Some(port.name.clone().unwrap_or_default()),
                protocol: Some(protocol(port.protocol.as_deref()).to_owned()),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// `findPort`: a numeric `targetPort` as is; a named one is looked up among the containers'
/// ports by name and protocol.
fn find_port(pod: &core::Pod, port: &core::ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        // The API server defaults `targetPort` to `port`.
        None => return Some(port.port),
        Some(IntOrString::Int(number)) => return Some(*number),
        // The API server would reject a numeric string; svcnet's Service conversion reads it
        // as the number, and so does this.
        Some(IntOrString::String(name)) => match name.parse() {
            Ok(number) => return Some(number),
            Err(_) => name,
        },
    };
    let wanted = protocol(port.protocol.as_deref());
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_ref() == Some(name) && protocol(p.protocol.as_deref()) == wanted)
        .map(|p| p.container_port)
}

/// A port's protocol, which the API server defaults to TCP.
fn protocol(protocol: Option<&str>) -> &str {
    protocol.unwrap_or("TCP")
}

#[cfg(test)]
mod tests;

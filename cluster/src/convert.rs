//! API objects (k8s-openapi types) to the model. A field svcnet cannot use makes the whole
//! object an error, so that the caller logs it and skips it rather than serving half of it.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::{
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};

use crate::model::{
    Endpoint, EndpointPort, EndpointSlice, Namespace, ObjectKey, Pod, Protocol, Service, ServiceAddressing,
    ServicePort, ServiceType, TargetPort, TrafficPolicy,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The annotation the EndpointSlice controller sets to the time of the change (a Pod or
/// Service update) that caused the slice's current version, in RFC 3339.
pub const LAST_CHANGE_TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Why an API object could not be turned into the model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("{kind} has no metadata.{field}")]
    MissingMeta { kind: &'static str, field: &'static str },
    #[error("{kind} {key}: {field}: {reason}")]
    InvalidField {
        kind: &'static str,
        key: String,
        field: String,
        reason: String,
    },
}

fn key_of(kind: &'static str, meta: &ObjectMeta) -> Result<ObjectKey, ConvertError> {
    let name = meta
        .name
        .as_deref()
        .ok_or(ConvertError::MissingMeta { kind, field: "name" })?;
    let namespace = meta.namespace.as_deref().ok_or(ConvertError::MissingMeta {
        kind,
        field: "namespace",
    })?;
    Ok(ObjectKey::new(namespace, name))
}

/// Builds `InvalidField` errors for one object.
struct Fields<'a> {
    kind: &'static str,
    key: &'a ObjectKey,
}

impl Fields<'_> {
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ConvertError {
        ConvertError::InvalidField {
            kind: self.kind,
            key: self.key.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn ip(&self, field: impl Into<String>, value: &str) -> Result<IpAddr, ConvertError> {
        value
            .parse()
            .map_err(|_| self.invalid(field, format!("`{value}` is not an IP address")))
    }

    fn port(&self, field: impl Into<String>, value: i32) -> Result<u16, ConvertError> {
        match u16::try_from(value) {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(self.invalid(field, format!("{value} is not a port number (1-65535)"))),
        }
    }

    fn protocol(&self, field: impl Into<String>, value: Option<&str>) -> Result<Protocol, ConvertError> {
        Protocol::parse(value).ok_or_else(|| {
            self.invalid(
                field,
                format!("`{}` is not TCP, UDP or SCTP", value.unwrap_or_default()),
            )
        })
    }

    fn policy(&self, field: &str, value: Option<&str>) -> Result<TrafficPolicy, ConvertError> {
        match value {
            None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
            Some("Local") => Ok(TrafficPolicy::Local),
            Some(other) => Err(self.invalid(field, format!("`{other}` is not Cluster or Local"))),
        }
    }
}

pub fn namespace(ns: &core::Namespace) -> Result<Namespace, ConvertError> {
    let name = ns.metadata.name.as_deref().ok_or(ConvertError::MissingMeta {
        kind: "Namespace",
        field: "name",
    })?;
    Ok(Namespace {
        name: name.into(),
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    })
}

pub fn service(svc: &core::Service) -> Result<Service, ConvertError> {
    let key = key_of("Service", &svc.metadata)?;
    let f = Fields {
        kind: "Service",
        key: &key,
    };
    let spec = svc.spec.as_ref().ok_or_else(|| f.invalid("spec", "missing"))?;

    let service_type = match spec.type_.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            return Err(f.invalid(
                "spec.type",
                format!("`{other}` is not ClusterIP, NodePort, LoadBalancer or ExternalName"),
            ));
        }
    };

    let addressing = if service_type == ServiceType::ExternalName {
        let name = spec
            .external_name
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('.');
        if name.is_empty() {
            return Err(f.invalid("spec.externalName", "missing for type ExternalName"));
        }
        ServiceAddressing::ExternalName(name.to_ascii_lowercase())
    } else {
        // `clusterIPs` supersedes `clusterIP`; older objects (and some tools) set only the latter.
        let ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            (_, Some(ip)) => vec![ip.as_str()],
            _ => vec![],
        };
        if ips.is_empty() || ips.iter().any(|ip| ip.eq_ignore_ascii_case("none")) {
            ServiceAddressing::Headless
        } else {
            let ips = ips
                .iter()
                .enumerate()
                .map(|(i, ip)| f.ip(format!("spec.clusterIPs[{i}]"), ip))
                .collect::<Result<_, _>>()?;
            ServiceAddressing::ClusterIp(ips)
        }
    };

    let ports = spec
        .ports
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            let port = f.port(format!("spec.ports[{i}].port"), p.port)?;
            let target_port = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => {
                    TargetPort::Number(f.port(format!("spec.ports[{i}].targetPort"), *n)?)
                }
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => TargetPort::Number(f.port(format!("spec.ports[{i}].targetPort"), n)?),
                    Err(_) => TargetPort::Name(s.clone()),
                },
            };
            Ok(ServicePort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                protocol: f.protocol(format!("spec.ports[{i}].protocol"), p.protocol.as_deref())?,
                port,
                target_port,
                node_port: p
                    .node_port
                    .map(|n| f.port(format!("spec.ports[{i}].nodePort"), n))
                    .transpose()?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;

    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, ip)| f.ip(format!("spec.externalIPs[{i}]"), ip))
        .collect::<Result<_, _>>()?;

    // Ingress entries with only a hostname carry no address the proxy could match on.
    let load_balancer_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, ing)| {
            ing.ip
                .as_deref()
                .map(|ip| f.ip(format!("status.loadBalancer.ingress[{i}].ip"), ip))
        })
        .collect::<Result<_, _>>()?;

    let load_balancer_source_ranges = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            r.trim().parse::<ipnet::IpNet>().map_err(|_| {
                f.invalid(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("`{r}` is not a CIDR"),
                )
            })
        })
        .collect::<Result<_, _>>()?;

    let session_affinity = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => {
            // The API server defaults the timeout to 3 hours.
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10_800);
            let secs = u64::try_from(secs)
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| {
                    f.invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{secs} is not in 1-86400"),
                    )
                })?;
            Some(Duration::from_secs(secs))
        }
        Some(other) => {
            return Err(f.invalid(
                "spec.sessionAffinity",
                format!("`{other}` is not None or ClientIP"),
            ));
        }
    };

    Ok(Service {
        service_type,
        addressing,
        ports,
        selector: spec.selector.clone().filter(|s| !s.is_empty()),
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges,
        external_traffic_policy: f.policy(
            "spec.externalTrafficPolicy",
            spec.external_traffic_policy.as_deref(),
        )?,
        internal_traffic_policy: f.policy(
            "spec.internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
        )?,
        session_affinity,
        health_check_node_port: spec
            .health_check_node_port
            .map(|p| f.port("spec.healthCheckNodePort", p))
            .transpose()?,
        key,
    })
}

/// Converts an EndpointSlice. Returns `Ok(None)` for slices svcnet does not serve: those without
/// the service-name label and those of address type FQDN (deprecated, never used for DNS).
pub fn endpoint_slice(slice: &discovery::EndpointSlice) -> Result<Option<EndpointSlice>, ConvertError> {
    let key = key_of("EndpointSlice", &slice.metadata)?;
    let f = Fields {
        kind: "EndpointSlice",
        key: &key,
    };
    let Some(service_name) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Ok(None);
    };
    match slice.address_type.as_str() {
        "IPv4" | "IPv6" => {}
        "FQDN" => return Ok(None),
        other => return Err(f.invalid("addressType", format!("`{other}` is not IPv4, IPv6 or FQDN"))),
    }

    let ports = slice
        .ports
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            Ok(EndpointPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                protocol: f.protocol(format!("ports[{i}].protocol"), p.protocol.as_deref())?,
                port: p
                    .port
                    .map(|n| f.port(format!("ports[{i}].port"), n))
                    .transpose()?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;

    let endpoints = slice
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let addresses = ep
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| f.ip(format!("endpoints[{i}].addresses[{j}]"), a))
                .collect::<Result<_, _>>()?;
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            Ok(Endpoint {
                addresses,
                hostname: ep
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .map(|h| h.to_ascii_lowercase()),
                ready,
                // `serving` defaults to `ready` when the API server did not set it.
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
                pod_name: ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone()),
            })
        })
        .collect::<Result<_, ConvertError>>()?;

    let last_change_trigger_time = slice
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME_ANNOTATION))
        .and_then(|value| {
            let time = parse_trigger_time(value);
            if time.is_none() {
                // Only a metric depends on it: serve the slice, as CoreDNS and kube-proxy do.
                tracing::warn!(
                    slice = %key,
                    value,
                    "ignoring an invalid {LAST_CHANGE_TRIGGER_TIME_ANNOTATION} annotation"
                );
            }
            time
        });

    Ok(Some(EndpointSlice {
        service_name: Arc::from(service_name.as_str()),
        key,
        ports,
        endpoints,
        last_change_trigger_time,
    }))
}

/// Parses an RFC 3339 time (Go's `time.RFC3339Nano`, as the controller writes it); `None` if
/// malformed or before the Unix epoch.
pub fn parse_trigger_time(value: &str) -> Option<SystemTime> {
    let time: k8s_openapi::jiff::Timestamp = value.trim().parse().ok()?;
    let since_epoch = Duration::try_from(time.as_duration()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

pub fn pod(pod: &core::Pod) -> Result<Pod, ConvertError> {
    let key = key_of("Pod", &pod.metadata)?;
    let f = Fields {
        kind: "Pod",
        key: &key,
    };
    let status = pod.status.as_ref();
    // `podIPs` lists every family; `podIP` alone is what older writers set.
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| f.ip(format!("status.podIPs[{i}]"), &p.ip))
        .collect::<Result<_, _>>()?;
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
    {
        let ip = f.ip("status.podIP", ip)?;
        if !ips.contains(&ip) {
            ips.insert(0, ip);
        }
    }
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    // kubelet's `getPodDNSType`: a host-network Pod asking for ClusterFirst gets the node's
    // resolv.conf instead; extra `dnsConfig.searches` are appended to whatever list applies.
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster_policy = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let extra_searches = spec
        .and_then(|s| s.dns_config.as_ref())
        .and_then(|c| c.searches.as_ref())
        .is_some_and(|searches| !searches.is_empty());
    Ok(Pod {
        ips,
        node_name: spec.and_then(|s| s.node_name.clone()),
        host_network,
        cluster_first_search: cluster_policy && !extra_searches,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        key,
    })
}

#[cfg(test)]
mod tests;

//! Writing to the test control plane the way a kubelet, a controller or `kubectl apply` would.
//! kube and k8s-openapi are re-exported: the tests are targets of the root package, whose
//! dependencies are not this crate's.

use std::sync::atomic::{AtomicU32, Ordering};

pub use k8s_openapi;
pub use kube;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
    discovery::{self, Scope},
};
use serde_json::{Value, json};

/// The field manager of everything the tests apply.
const FIELD_MANAGER: &str = "svcnet-test";

/// A name no other test of this process uses: `prefix-N`. Each control plane is fresh per
/// process, so a counter is enough.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Server-side applies one object given as JSON (`apiVersion`, `kind`, `metadata.name`, and
/// `metadata.namespace` for a namespaced kind), as `kubectl apply --server-side` does: the
/// resource is found through discovery, so any kind the API server serves works.
pub async fn apply(client: &Client, object: &Value, dry_run: bool) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("a Kubernetes object");
    let types = object.types.as_ref().expect("apiVersion and kind");
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", &types.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let ns = object.metadata.namespace.as_deref().expect("metadata.namespace");
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    let name = object.metadata.name.clone().expect("metadata.name");
    api.patch(&name, &params, &Patch::Apply(&object)).await
}

/// [`apply`] for real, panicking on failure.
pub async fn create(client: &Client, object: Value) -> DynamicObject {
    apply(client, &object, false)
        .await
        .unwrap_or_else(|e| panic!("apply {object}: {e}"))
}

/// A Namespace.
pub async fn namespace(client: &Client, name: &str) {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await;
}

/// A Node: the EndpointSlice controller leaves out the pods of a node it does not know.
/// Applying the same Node again (from parallel tests) changes nothing.
pub async fn node(client: &Client, name: &str) {
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
    )
    .await;
}

/// A Pod on `node` with `labels`, and a hostname and subdomain if given. Its status stays
/// empty (no kubelet) until [`pod_status`].
pub async fn pod(
    client: &Client,
    ns: &str,
    name: &str,
    node: &str,
    labels: Value,
    host: Option<(&str, &str)>,
) {
    let mut spec = json!({
        "nodeName": node,
        "containers": [{"name": "app", "image": "registry.invalid/app"}],
    });
    if let Some((hostname, subdomain)) = host {
        spec["hostname"] = json!(hostname);
        spec["subdomain"] = json!(subdomain);
    }
    create(
        client,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}),
    )
    .await;
}

/// Writes what a kubelet would: running, with `ip`, and the Ready condition, which changed now
/// (the EndpointSlice controller's `last-change-trigger-time` comes from that transition).
pub async fn pod_status(client: &Client, ns: &str, name: &str, ip: &str, ready: bool) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": format!("{now:.0}"),
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("status of pod {ns}/{name}: {e}"));
}

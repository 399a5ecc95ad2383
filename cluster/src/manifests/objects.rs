//! Parsed documents to the API objects svcnet uses.

use std::{fmt, path::Path, sync::Arc};

use k8s_openapi::{
    Metadata, NamespaceResourceScope, Resource,
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::FileError;

/// The namespace of an object whose manifest names none, as `kubectl apply` does without `-n`.
pub(super) const DEFAULT_NAMESPACE: &str = "default";

/// Where an object was read from, for messages about it.
#[derive(Clone, Debug)]
pub(super) struct Origin {
    pub path: Arc<Path>,
    /// Line where the object's document starts, when known.
    pub line: Option<u64>,
}

impl Origin {
    pub fn error(&self, message: impl fmt::Display) -> FileError {
        FileError {
            path: self.path.to_path_buf(),
            line: self.line,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// The kinds of object svcnet uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
}

/// The kind of one object. `Ok(None)` for the kinds svcnet does not use, which a manifest
/// directory is free to hold (Deployments, ConfigMaps...): the workloads behind Pods are not
/// expanded, only literal Pod manifests count.
pub(super) fn kind_of(value: &Value, origin: &Origin) -> Result<Option<Kind>, String> {
    let field = |name| value.get(name).and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err("not a Kubernetes object: `apiVersion` and `kind` must be strings".to_owned());
    };
    let known = if is::<core::Namespace>(api_version, kind) {
        Kind::Namespace
    } else if is::<core::Service>(api_version, kind) {
        Kind::Service
    } else if is::<discovery::EndpointSlice>(api_version, kind) {
        Kind::EndpointSlice
    } else if is::<core::Pod>(api_version, kind) {
        Kind::Pod
    } else if kind == "List" {
        // Lists with an `items` sequence were expanded when the file was read.
        return Err("`items` of a List must be a sequence".to_owned());
    } else {
        tracing::debug!(%origin, %api_version, %kind, "ignoring an object of a kind svcnet does not use");
        return Ok(None);
    };
    Ok(Some(known))
}

fn is<R: Resource>(api_version: &str, kind: &str) -> bool {
    api_version == R::API_VERSION && kind == R::KIND
}

/// Deserializes an object of a known kind, naming it in the error: the document's line alone
/// does not say which item of a List was wrong.
pub(super) fn typed<R: Resource + DeserializeOwned>(value: Value) -> Result<R, String> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    serde_json::from_value(value).map_err(|e| match name {
        Some(name) => format!("{} {name}: {e}", R::KIND),
        None => format!("{}: {e}", R::KIND),
    })
}

/// Like [`typed`], for a namespaced kind: a manifest without a namespace is in `default`.
pub(super) fn namespaced<R>(value: Value) -> Result<R, String>
where
    R: Resource<Scope = NamespaceResourceScope> + Metadata<Ty = ObjectMeta> + DeserializeOwned,
{
    let mut object: R = typed(value)?;
    default_namespace(object.metadata_mut());
    Ok(object)
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
}

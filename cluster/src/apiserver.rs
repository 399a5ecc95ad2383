//! The API server source: lists and watches Namespaces, Services, EndpointSlices and Pods,
//! folds the events into one [`ClusterState`](crate::ClusterState) and publishes snapshots.
//!
//! Objects are converted as they arrive and only the model is kept (no reflector stores, which
//! would hold a second, larger copy of everything). While the API server cannot be reached
//! the last known state keeps being served; the watchers retry with kube's default backoff.

mod driver;
mod metrics;
mod watched;

#[cfg(test)]
mod tests;

use std::{
    fmt::Debug,
    path::{Path, PathBuf},
};

use futures::{
    StreamExt,
    stream::{BoxStream, SelectAll},
};
use k8s_openapi::api::{core::v1 as core, discovery::v1 as discovery};
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::{
        WatchStreamExt,
        watcher::{self, watcher},
    },
};
use serde::de::DeserializeOwned;

pub use self::metrics::SourceMetrics;
use self::{
    driver::{Driver, Item, WatchFailure},
    watched::{Kind, Watchable, Watched},
};
use crate::{PodScope, Publisher, SourceOptions};

/// Why the API server source could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot load the kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("no kubeconfig given, and no default kubeconfig or in-cluster configuration found")]
    InferConfig(#[source] InferConfigError),
    #[error("cannot create the API server client")]
    Client(#[source] kube::Error),
    #[error("`{0}` is not a node name (a lowercase DNS subdomain)")]
    InvalidNodeName(String),
    /// kube's watchers retry forever, so this means a bug rather than an outage.
    #[error("the watches ended")]
    WatchesEnded,
}

/// Keeps a [`Publisher`] current from the API server.
pub struct ApiServerSource {
    client: Client,
    options: SourceOptions,
    metrics: SourceMetrics,
}

impl ApiServerSource {
    pub fn new(client: Client, options: SourceOptions) -> Self {
        Self {
            metrics: SourceMetrics::new(Kind::watched(&options)),
            client,
            options,
        }
    }

    /// Connects from a kubeconfig path, or from the default kubeconfig or the in-cluster
    /// configuration (service account) when `None`.
    pub async fn connect(kubeconfig: Option<&Path>, options: SourceOptions) -> Result<Self, ApiServerError> {
        let config = match kubeconfig {
            Some(path) => {
                let error = |source| ApiServerError::Kubeconfig {
                    path: path.to_owned(),
                    source,
                };
                let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(error)?
            }
            None => kube::Config::infer().await.map_err(ApiServerError::InferConfig)?,
        };
        let client = Client::try_from(config).map_err(ApiServerError::Client)?;
        Ok(Self::new(client, options))
    }

    /// The source's metrics; register them before calling [`run`](Self::run).
    pub fn metrics(&self) -> &SourceMetrics {
        &self.metrics
    }

    /// Watches until dropped, publishing a snapshot after each batch of changes (and the first
    /// synced one even without changes). Returns only on a setup error: watch errors are
    /// retried, and the last known state stays published meanwhile.
    pub async fn run(self, publisher: Publisher) -> Result<(), ApiServerError> {
        let events = self.watches()?;
        let watched = Watched::new(&self.options);
        Driver::new(watched, self.metrics, Some(self.client), move |snapshot| {
            publisher.publish(snapshot);
        })
        .run(events)
        .await;
        Err(ApiServerError::WatchesEnded)
    }

    fn watches(&self) -> Result<SelectAll<BoxStream<'static, Item>>, ApiServerError> {
        // Lists are served from the API server's watch cache rather than read from etcd, as
        // client-go informers do: a DaemonSet restarting on every node at once must not turn
        // into thousands of quorum reads.
        let config = watcher::Config::default().any_semantic();
        let client = &self.client;
        let mut streams = vec![
            watch(
                Api::<PartialObjectMeta<core::Namespace>>::all(client.clone()),
                config.clone(),
            ),
            watch(Api::<core::Service>::all(client.clone()), config.clone()),
        ];
        if self.options.endpoint_slices {
            streams.push(watch(
                Api::<discovery::EndpointSlice>::all(client.clone()),
                config.clone(),
            ));
        }
        let pods = match &self.options.pods {
            PodScope::None => None,
            PodScope::All => Some(config),
            PodScope::Node(node) => Some(config.fields(&node_selector(node)?)),
        };
        if let Some(config) = pods {
            streams.push(watch(Api::<core::Pod>::all(client.clone()), config));
        }
        Ok(futures::stream::select_all(streams))
    }
}

/// One watch, with backoff, as a stream of [`Item`]s.
fn watch<K>(api: Api<K>, config: watcher::Config) -> BoxStream<'static, Item>
where
    K: Watchable + kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(|event| {
            event
                .map(K::update)
                .map_err(|error| WatchFailure { kind: K::KIND, error })
        })
        .boxed()
}

/// The field selector for the Pods of one node. A node name is a DNS subdomain; checking that
/// keeps a typo from becoming a selector that silently matches nothing, or other Pods (a `,`
/// would start a second requirement).
fn node_selector(node: &str) -> Result<String, ApiServerError> {
    let valid = !node.is_empty()
        && node.len() <= 253
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if valid {
        Ok(format!("spec.nodeName={node}"))
    } else {
        Err(ApiServerError::InvalidNodeName(node.to_owned()))
    }
}

//! The operator's HTTP surface, with CoreDNS's semantics so that the probes and dashboards of
//! a CoreDNS Deployment carry over:
//!
//! - `/health` (CoreDNS `health`, port 8080): 200 while the process lives, also during lame
//!   duck, so the kubelet does not restart a server that is draining;
//! - `/ready` (CoreDNS `ready`, port 8181): 503 until the cluster state has synced and again
//!   from the start of lame duck, so that traffic moves away before the server stops;
//! - `/metrics` (CoreDNS `prometheus`, port 9153): the Prometheus text exposition.
//!
//! Each is served on its own listener, as CoreDNS does, so each can be bound where its
//! consumer expects it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::info;

/// What the probes report; shared by the servers and the parts of svcnet that change it.
#[derive(Debug, Default)]
pub struct Probes {
    synced: AtomicBool,
    lame_duck: AtomicBool,
}

impl Probes {
    /// The cluster state completed its first sync: ready from now on.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Shutdown has begun: not ready any more, still alive and still answering.
    pub fn start_lame_duck(&self) {
        self.lame_duck.store(true, Ordering::Relaxed);
    }

    /// Why svcnet is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.lame_duck.load(Ordering::Relaxed) {
            Some("shutting down (lame duck)")
        } else if !self.synced.load(Ordering::Relaxed) {
            Some("cluster state not synced yet")
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} for {endpoint}: {source}")]
    Bind {
        addr: SocketAddr,
        endpoint: &'static str,
        source: std::io::Error,
    },
    #[error("{endpoint} server failed: {source}")]
    Serve {
        endpoint: &'static str,
        source: std::io::Error,
    },
}

/// One endpoint's listener, bound; `serve` runs it.
pub struct Endpoint {
    endpoint: &'static str,
    listener: TcpListener,
    router: Router,
}

impl Endpoint {
    /// `/health` on `addr`.
    pub async fn health(addr: SocketAddr) -> Result<Self, AdminError> {
        // Liveness needs no state: answering at all is the proof.
        let router = Router::new().route("/health", get(|| async { "OK" }));
        Self::new("health", addr, router).await
    }

    /// `/ready` on `addr`.
    pub async fn ready(addr: SocketAddr, probes: Arc<Probes>) -> Result<Self, AdminError> {
        let router = Router::new().route("/ready", get(ready)).with_state(probes);
        Self::new("ready", addr, router).await
    }

    /// `/metrics` on `addr`, encoding `registry` on every scrape.
    pub async fn metrics(addr: SocketAddr, registry: Arc<Registry>) -> Result<Self, AdminError> {
        let router = Router::new().route("/metrics", get(metrics)).with_state(registry);
        Self::new("metrics", addr, router).await
    }

    /// `router` on `addr`, named `endpoint` in logs and errors: for endpoints defined
    /// elsewhere (the Service proxy's `/healthz`).
    pub async fn new(endpoint: &'static str, addr: SocketAddr, router: Router) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| AdminError::Bind {
            addr,
            endpoint,
            source,
        })?;
        Ok(Self {
            endpoint,
            listener,
            router,
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub async fn serve(self) -> Result<(), AdminError> {
        info!(endpoint = self.endpoint, addr = ?self.local_addr(), "HTTP endpoint serving");
        let endpoint = self.endpoint;
        axum::serve(self.listener, self.router)
            .await
            .map_err(|source| AdminError::Serve { endpoint, source })
    }
}

async fn ready(State(probes): State<Arc<Probes>>) -> impl IntoResponse {
    match probes.not_ready_reason() {
        None => (StatusCode::OK, "OK".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")),
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            error.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests;

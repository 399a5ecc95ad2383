//! Whether the proxy keeps up: kube-proxy's `/healthz` and `/livez` (port 10256).
//!
//! The proxy is unhealthy when a cluster change has waited for more than the health timeout
//! (twice `proxy-sync-period`, kube-proxy's 2 × syncPeriod) without being applied: a stuck
//! or failing sync. While nothing waits it is healthy, however long ago the last sync was, so
//! a quiet cluster is not mistaken for a stuck proxy.
//!
//! Which change is applied is told by time: a sync applies every change published before it
//! loaded its snapshot. The watcher that timestamps changes runs apart from the sync loop, so
//! a change published during a sync is still timed when it was published. The watcher and the
//! loop's load take one lock and compare snapshots, so a watcher that wakes only after the
//! loop loaded the snapshot it was woken for does not count it as waiting.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use svcnet_cluster::{Reader, Snapshot};
use tokio::{task::JoinHandle, time::Instant};

use crate::metrics::{CodeLabels, ProxyMetrics};

/// How the proxy is doing, shared by the sync loop, the change watcher and the HTTP servers.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// When changes not applied yet were published: only the first change after each sync
    /// start is kept, since a later one before the next start is applied with it. Short:
    /// one entry per sync attempt since the last success.
    pending: VecDeque<Instant>,
    /// When the last sync loaded its snapshot, and which one: weak, so that it is not kept
    /// in memory, while the allocation stays reserved so that no later snapshot can share
    /// its address.
    last_load: Option<Instant>,
    loaded: Weak<Snapshot>,
    /// When the last sync succeeded, for the JSON body.
    last_updated: Option<SystemTime>,
}

impl HealthState {
    /// A change published `at`, unless one timed since the last load covers it.
    fn record(&mut self, at: Instant) {
        let covered = match (self.pending.back(), self.last_load) {
            (None, _) => false,
            (Some(back), Some(load)) => *back > load,
            (Some(_), None) => true,
        };
        if !covered {
            self.pending.push_back(at);
        }
    }
}

/// The proxy's health at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthStatus {
    pub healthy: bool,
    /// When the last sync succeeded, if one has.
    pub last_updated: Option<SystemTime>,
}

/// kube-proxy's default `syncPeriod`.
const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);

impl Default for ProxyHealth {
    fn default() -> Self {
        Self::new(DEFAULT_SYNC_PERIOD)
    }
}

impl ProxyHealth {
    /// Unhealthy once a change has waited `2 × sync_period`.
    pub fn new(sync_period: Duration) -> Self {
        Self {
            timeout: sync_period.saturating_mul(2),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // The state stays consistent whatever panicked while holding it: every update is a
        // single assignment or push.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change was published through `reader`, now. Not counted when the sync loop has
    /// loaded the current snapshot already.
    pub fn queued(&self, reader: &Reader) {
        let now = Instant::now();
        let mut state = self.lock();
        let current = reader.load();
        if state
            .loaded
            .upgrade()
            .is_some_and(|loaded| Arc::ptr_eq(&loaded, &current))
        {
            return;
        }
        state.record(now);
    }

    /// Loads the snapshot for a sync, with the time to pass to [`Self::applied`].
    pub fn load(&self, reader: &Reader) -> (Arc<Snapshot>, Instant) {
        let mut state = self.lock();
        let snapshot = reader.load_full();
        let now = Instant::now();
        // A new snapshot the watcher has not seen yet (the loop won the race to it) is a
        // change too, published just before now.
        let previous = state.loaded.upgrade();
        if previous.is_none_or(|previous| !Arc::ptr_eq(&previous, &snapshot)) {
            state.record(now);
        }
        state.loaded = Arc::downgrade(&snapshot);
        state.last_load = Some(now);
        (snapshot, now)
    }

    /// The sync that loaded its snapshot at `loaded_at` succeeded: every change published
    /// before then is in the kernel. Returns when the oldest of them was published, except
    /// for the first sync: it programs the state found at start, not a change (kube-proxy
    /// likewise ignores objects changed before it started).
    pub fn applied(&self, loaded_at: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let first_sync = state.last_updated.is_none();
        state.last_updated = Some(SystemTime::now());
        let mut oldest = None;
        while let Some(first) = state.pending.front().copied().filter(|t| *t <= loaded_at) {
            oldest.get_or_insert(first);
            state.pending.pop_front();
        }
        oldest.filter(|_| !first_sync)
    }

    pub fn status(&self) -> HealthStatus {
        let state = self.lock();
        let late = state
            .pending
            .front()
            .is_some_and(|queued| queued.elapsed() >= self.timeout);
        HealthStatus {
            healthy: !late,
            last_updated: state.last_updated,
        }
    }
}

/// Aborts a task when dropped, so a helper task ends with the loop that started it.
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Timestamps every snapshot published through `reader` until the publisher is gone.
pub(crate) fn watch_changes(
    mut reader: Reader,
    health: Arc<ProxyHealth>,
    metrics: ProxyMetrics,
) -> AbortOnDrop {
    AbortOnDrop::spawn(async move {
        while reader.changed().await {
            health.queued(&reader);
            metrics.queued(SystemTime::now());
        }
    })
}

/// `/healthz` and `/livez`, with kube-proxy's status codes and JSON bodies. svcnet does not
/// watch its Node object, so the node is always eligible (kube-proxy answers 503 on
/// `/healthz` while its Node is being deleted or tainted `ToBeDeletedByClusterAutoscaler`).
pub fn router(health: Arc<ProxyHealth>, metrics: ProxyMetrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state((health, metrics))
}

type HealthzState = State<(Arc<ProxyHealth>, ProxyMetrics)>;

async fn healthz(State((health, metrics)): HealthzState) -> impl IntoResponse {
    let (status, body) = health_body(&health, true);
    count(&metrics.healthz, status);
    json(status, body)
}

async fn livez(State((health, metrics)): HealthzState) -> impl IntoResponse {
    let (status, body) = health_body(&health, false);
    count(&metrics.livez, status);
    json(status, body)
}

fn count(family: &Family<CodeLabels, Counter>, status: StatusCode) {
    let code = status.as_u16().to_string();
    family.get_or_create(&CodeLabels { code }).inc();
}

/// kube-proxy's body: `lastUpdated` is the current time while healthy (older kube-proxies
/// reported every sync loop run there, and clients rely on it being recent), the last
/// successful sync otherwise. Times are RFC 3339; kube-proxy prints Go's `time.Time` text.
fn health_body(health: &ProxyHealth, with_node: bool) -> (StatusCode, String) {
    let status = health.status();
    let now = SystemTime::now();
    let (code, last_updated) = if status.healthy {
        (StatusCode::OK, Some(now))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, status.last_updated)
    };
    let mut body = serde_json::json!({
        "lastUpdated": rfc3339(last_updated),
        "currentTime": rfc3339(Some(now)),
    });
    if with_node {
        body["nodeEligible"] = serde_json::Value::Bool(true);
    }
    (code, body.to_string())
}

/// Never synced is Go's zero time, as kube-proxy shows it.
fn rfc3339(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || "0001-01-01T00:00:00Z".to_owned(),
        |t| humantime::format_rfc3339_millis(t).to_string(),
    )
}

pub(crate) fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(30);

    /// A proxy's view of a cluster: `change` publishes, `load` loads as the sync loop does.
    struct Cluster {
        publisher: svcnet_cluster::Publisher,
        reader: Reader,
        health: ProxyHealth,
    }

    impl Cluster {
        fn new() -> Self {
            let (publisher, reader) = svcnet_cluster::channel();
            Self {
                publisher,
                reader,
                health: ProxyHealth::new(PERIOD),
            }
        }

        fn change(&self) {
            self.publisher.publish(Snapshot::default());
            self.health.queued(&self.reader);
        }

        fn load(&self) -> Instant {
            self.health.load(&self.reader).1
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_not_applied_within_twice_the_sync_period_is_unhealthy() {
        let cluster = Cluster::new();
        let health = &cluster.health;
        assert!(health.status().healthy, "healthy while starting, nothing waits");
        cluster.change();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(health.status().healthy, "waiting, not late yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            health.status(),
            HealthStatus {
                healthy: false,
                last_updated: None
            }
        );
        let loaded = cluster.load();
        assert_eq!(health.applied(loaded), None, "the first sync programs no change");
        let status = health.status();
        assert!(status.healthy && status.last_updated.is_some());
        // A quiet cluster stays healthy however long ago the last sync was.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(health.status().healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_published_during_a_sync_still_waits_for_the_next() {
        let cluster = Cluster::new();
        let health = &cluster.health;
        health.applied(cluster.load());
        cluster.change();
        let first = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let loaded = cluster.load();
        tokio::time::advance(Duration::from_secs(1)).await;
        cluster.change();
        let second = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        cluster.change(); // covered by `second`: applied by the same sync
        assert_eq!(health.applied(loaded), Some(first));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            !health.status().healthy,
            "the change after the load was not applied"
        );
        let loaded = cluster.load();
        assert_eq!(health.applied(loaded), Some(second));
        assert!(health.status().healthy);
        assert_eq!(health.applied(cluster.load()), None, "nothing left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_wakes_after_the_load_adds_nothing() {
        let cluster = Cluster::new();
        let health = &cluster.health;
        health.applied(cluster.load());
        tokio::time::advance(Duration::from_secs(1)).await;
        cluster.publisher.publish(Snapshot::default());
        let loaded = cluster.load();
        tokio::time::advance(Duration::from_secs(1)).await;
        health.queued(&cluster.reader); // late: the loop has this snapshot already
        assert_eq!(health.applied(loaded), Some(loaded), "timed by the load instead");
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(health.status().healthy, "nothing waits");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_syncs_keep_the_oldest_change() {
        let cluster = Cluster::new();
        let health = &cluster.health;
        health.applied(cluster.load());
        tokio::time::advance(Duration::from_secs(1)).await;
        cluster.change();
        let first = Instant::now();
        for _ in 0..3 {
            // A failed sync loads, then never calls `applied`; new changes keep coming.
            tokio::time::advance(Duration::from_secs(10)).await;
            cluster.load();
            tokio::time::advance(Duration::from_secs(1)).await;
            cluster.change();
        }
        assert_eq!(health.lock().pending.len(), 4, "one per attempt, not per change");
        tokio::time::advance(Duration::from_secs(27)).await;
        assert!(!health.status().healthy);
        assert_eq!(health.applied(cluster.load()), Some(first));
        assert!(health.status().healthy);
    }

    #[test]
    fn the_body_has_kube_proxys_fields() {
        let health = ProxyHealth::new(PERIOD);
        let (code, body) = health_body(&health, true);
        assert_eq!(code, StatusCode::OK);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["nodeEligible"], true);
        assert_eq!(value["lastUpdated"], value["currentTime"], "recent while healthy");
        let (_, body) = health_body(&health, false);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(value.get("nodeEligible").is_none(), "livez: {value}");
        assert!(value["currentTime"].as_str().unwrap().ends_with('Z'));
    }
}

//! The loop that turns the merged watch events into published snapshots, and keeps track of
//! whether the API server can be reached.

use std::time::Duration;

use futures::{Stream, StreamExt, future::BoxFuture, future::OptionFuture};
use kube::{Client, runtime::watcher};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    SourceMetrics,
    watched::{Kind, Update, Watched},
};
use crate::Snapshot;

/// What the merged watch streams yield.
pub(crate) type Item = Result<Update, WatchFailure>;

/// An error of one watch. The watcher recovers by itself (after a backoff); this is only
/// reported.
#[derive(Debug)]
pub(crate) struct WatchFailure {
    pub(crate) kind: Kind,
    pub(crate) error: watcher::Error,
}

/// How long to keep collecting events after the first one of a batch. A snapshot is rebuilt
/// from the whole state, so a burst of events must cost one rebuild, not one per event; the
/// delay is far below what Service changes take to reach DNS anywhere else.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// How often to check whether an unreachable API server is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reachability {
    /// Nothing has been heard yet.
    Unknown,
    Up,
    Down,
}

/// What one batch of events did.
#[derive(Default)]
struct Batch {
    changed: bool,
    /// An event came from the API server (rather than only errors).
    heard: bool,
}

pub(crate) struct Driver<P> {
    watched: Watched,
    metrics: SourceMetrics,
    reachability: Reachability,
    /// Asks the API server for its version while it is down; `None` in tests.
    client: Option<Client>,
    probe: Option<BoxFuture<'static, bool>>,
    publish: P,
    published_synced: bool,
}

impl<P: FnMut(Snapshot)> Driver<P> {
    pub(crate) fn new(watched: Watched, metrics: SourceMetrics, client: Option<Client>, publish: P) -> Self {
        Self {
            watched,
            metrics,
            reachability: Reachability::Unknown,
            client,
            probe: None,
            publish,
            published_synced: false,
        }
    }

    /// Runs until `events` ends, which the watchers never do.
    pub(crate) async fn run(mut self, mut events: impl Stream<Item = Item> + Unpin) {
        loop {
            tokio::select! {
                item = events.next() => match item {
                    Some(item) => self.batch(item, &mut events).await,
                    None => return,
                },
                Some(answered) = OptionFuture::from(self.probe.as_mut()) => {
                    self.probe = None;
                    if answered {
                        self.reachable();
                    } else {
                        self.arm_probe();
                    }
                }
            }
        }
    }

    /// Applies `first` and whatever else arrives within the batch window, then publishes once.
    async fn batch(&mut self, first: Item, events: &mut (impl Stream<Item = Item> + Unpin)) {
        let mut batch = Batch::default();
        self.handle(first, &mut batch);
        let deadline = Instant::now() + BATCH_WINDOW;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, events.next()).await {
            self.handle(item, &mut batch);
        }
        self.finish(batch);
    }

    fn handle(&mut self, item: Item, batch: &mut Batch) {
        match item {
            Ok(update) => self.apply(update, batch),
            Err(failure) => self.watch_failed(&failure),
        }
    }

    fn apply(&mut self, update: Update, batch: &mut Batch) {
        // Per event rather than per batch, so that the latest word on reachability wins.
        if update.is_from_server() {
            batch.heard = true;
            self.reachable();
        }
        let kind = update.kind();
        match self.watched.apply(update) {
            Ok(changed) => batch.changed |= changed,
            Err(error) => {
                warn!("skipping a malformed object: {error}");
                self.metrics.rejected(kind);
            }
        }
    }

    fn finish(&mut self, batch: Batch) {
        if batch.heard {
            self.metrics.synced_now();
        }
        // The first synced snapshot goes out even if the lists were empty.
        let newly_synced = !self.published_synced && self.watched.synced();
        if newly_synced {
            info!("cluster state synced from the API server");
            self.published_synced = true;
        }
        if batch.changed || newly_synced {
            (self.publish)(self.watched.snapshot(batch.changed));
        }
    }

    fn watch_failed(&mut self, failure: &WatchFailure) {
        let resource = failure.kind.resource();
        let error = &failure.error;
        self.metrics.watch_error(failure.kind);
        if is_unreachable(error) {
            self.unreachable(resource, error);
        } else if is_gone(error) {
            // The resource version we resume from is too old (normal after a long
            // disconnect); the watcher relists.
            debug!(resource, "watch expired, relisting: {error}");
        } else {
            warn!(resource, "API server refused the watch: {error}");
        }
    }

    fn unreachable(&mut self, resource: &str, error: &watcher::Error) {
        if self.reachability == Reachability::Down {
            debug!(resource, "API server still unreachable: {error}");
            return;
        }
        warn!(
            resource,
            "API server unreachable, serving the last known state: {error}"
        );
        self.reachability = Reachability::Down;
        self.metrics.set_up(false);
        self.arm_probe();
    }

    fn reachable(&mut self) {
        if self.reachability == Reachability::Down {
            info!("API server reachable again");
        }
        self.reachability = Reachability::Up;
        self.metrics.set_up(true);
        self.probe = None;
    }

    /// A watch that resumes after an outage yields nothing until the next change, so a quiet
    /// cluster would look unreachable long after it is back; the probe notices sooner.
    fn arm_probe(&mut self) {
        self.probe = self.client.clone().map(|client| {
            Box::pin(async move {
                tokio::time::sleep(PROBE_INTERVAL).await;
                client.apiserver_version().await.is_ok()
            }) as BoxFuture<'static, bool>
        });
    }
}

/// Whether the API server could not be reached at all, as opposed to an answer it gave
/// (403 from RBAC, 410 Gone).
fn is_unreachable(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => !matches!(error, kube::Error::Api(_)),
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => false,
    }
}

fn is_gone(error: &watcher::Error) -> bool {
    const GONE: u16 = 410;
    match error {
        watcher::Error::WatchError(status) => status.code == GONE,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == GONE,
        _ => false,
    }
}

//! Re-reading the directory whenever something in it changes.

use std::{sync::Arc, time::Duration};

use notify::{
    EventKind, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode},
};
use tokio::sync::mpsc;

use super::{LoadReport, ManifestError, ManifestSource, files};
use crate::{ClusterState, Publisher};

/// How long to wait after a change for the ones that come with it: saving a file, or a
/// ConfigMap update swapping its `..data` link, is a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(100);

pub(super) async fn run(source: ManifestSource, publisher: Publisher) -> Result<(), ManifestError> {
    // A missing directory is the same error here as for `load`, not a watcher error.
    files::ensure_dir(&source.dir)?;
    let (tx, mut events) = mpsc::unbounded_channel();
    let watch_error = |error| ManifestError::Watch {
        path: source.dir.clone(),
        source: error,
    };
    // The watcher lives as long as this future: dropping it stops the watch.
    let mut watcher = notify::recommended_watcher(move |event| {
        // Fails only once the loop below is gone, when nobody needs the event.
        let _ = tx.send(event);
    })
    .map_err(watch_error)?;
    // Watch before the first load so that a change made during it is not missed.
    watcher
        .watch(&source.dir, RecursiveMode::Recursive)
        .map_err(watch_error)?;

    let source = Arc::new(source);
    let (mut state, report) = load(&source, ClusterState::default()).await?;
    log_loaded(&report?);
    publisher.publish(state.snapshot(true));

    while let Some(event) = events.recv().await {
        if !is_change(&event) {
            continue;
        }
        tokio::time::sleep(DEBOUNCE).await;
        while events.try_recv().is_ok() {}

        let serial = state.serial();
        let (next, report) = load(&source, state).await?;
        state = next;
        match report {
            Ok(report) => log_loaded(&report),
            // Most likely the directory is being replaced; keep serving what it held.
            Err(error) => tracing::warn!(%error, "manifests not reloaded; keeping the last state"),
        }
        if state.serial() != serial {
            publisher.publish(state.snapshot(true));
        }
    }
    Ok(())
}

/// Loads on the blocking pool, moving the state there and back.
async fn load(
    source: &Arc<ManifestSource>,
    mut state: ClusterState,
) -> Result<(ClusterState, Result<LoadReport, ManifestError>), ManifestError> {
    let source = source.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let report = source.load(&mut state);
        (state, report)
    })
    .await?)
}

/// Whether an event may have changed what the directory holds. Loading opens and reads every
/// file, and those events must not trigger another load; a file closed after writing must,
/// since a slow writer's earlier events may have been read before it finished.
fn is_change(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        // Lost events (an overflowing queue) can only be made up for by reloading.
        Err(error) => {
            tracing::warn!(%error, "watching the manifests; reloading");
            true
        }
    }
}

fn log_loaded(report: &LoadReport) {
    tracing::info!(
        files = report.files,
        objects = report.objects,
        errors = report.errors.len(),
        "loaded manifests"
    );
}

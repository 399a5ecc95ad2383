//! The "directory of manifests" source: the cluster as a set of YAML/JSON files.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the directory is read (multi-document YAML,
//! JSON and `kind: List` alike). Namespaces, Services, EndpointSlices and Pods are used; any
//! other kind is ignored. A Service with a selector but no EndpointSlice of its own gets the
//! slices the EndpointSlice controller would have written for the Pods in the directory, so a
//! directory of plain Pod and Service manifests behaves like a cluster.
//!
//! The directory is re-read whole on every change. A file that does not parse, or an object
//! that does not convert, is reported and skipped: the rest of the directory still loads.

mod contents;
mod derive;
mod files;
mod objects;
mod watch;

use std::{fmt, io, path::PathBuf};

use crate::{ClusterState, Publisher, SourceOptions};

use self::{contents::Contents, files::Listing};

/// Reads a directory of manifests into a [`ClusterState`], once or on every change.
#[derive(Clone, Debug)]
pub struct ManifestSource {
    dir: PathBuf,
    options: SourceOptions,
}

impl ManifestSource {
    pub fn new(dir: impl Into<PathBuf>, options: SourceOptions) -> Self {
        Self {
            dir: dir.into(),
            options,
        }
    }

    /// Loads the directory once into `state` (used at start and by tools like render-rules).
    ///
    /// Every collection of `state` is replaced by what the directory holds now; the serial only
    /// moves if that differs from what `state` held. Problems with single files or objects are
    /// logged and returned in the report; only an unreadable directory is an error.
    pub fn load(&self, state: &mut ClusterState) -> Result<LoadReport, ManifestError> {
        let Listing { files, errors } = files::list(&self.dir)?;
        let mut report = LoadReport {
            files: files.len(),
            objects: 0,
            errors,
        };
        let mut contents = Contents::new(&self.options);
        for path in files {
            match files::read(&path) {
                Ok(documents) => contents.add_file(&path, documents, &mut report),
                Err(error) => report.errors.push(error),
            }
        }
        if self.options.endpoint_slices {
            contents.derive_endpoint_slices(&mut report);
        }
        for error in &report.errors {
            tracing::warn!(%error, "skipped part of the manifests");
        }
        let changed = contents.replace(state);
        state.touch(changed);
        Ok(report)
    }

    /// Loads, publishes a synced snapshot, then watches DIR and republishes on every change until
    /// the future is dropped.
    pub async fn run(self, publisher: Publisher) -> Result<(), ManifestError> {
        watch::run(self, publisher).await
    }
}

/// What one load read.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Manifest files found.
    pub files: usize,
    /// Objects of the kinds svcnet uses that were loaded (derived EndpointSlices not counted).
    pub objects: usize,
    /// Files that could not be read or parsed, and objects that were skipped.
    pub errors: Vec<FileError>,
}

/// A file, or an object in it, that was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based line of the error, or of the document holding the object, when known.
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// Why the directory could not be loaded or watched at all.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest path {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot watch manifest directory {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    /// The blocking task that reads the directory panicked or was cancelled.
    #[error("manifest loading task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[cfg(test)]
mod tests;

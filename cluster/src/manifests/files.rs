//! Finding the manifest files under the directory and parsing each into its objects.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde_json::Value;
use serde_saphyr::Spanned;

use super::{FileError, ManifestError};

/// The manifest files under the directory, and the subdirectories that could not be read.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub files: Vec<PathBuf>,
    pub errors: Vec<FileError>,
}

/// Lists the manifest files under `root`, sorted so that every load reads them in the same
/// order (a key defined twice resolves the same way each time).
pub(super) fn list(root: &Path) -> Result<Listing, ManifestError> {
    ensure_dir(root)?;
    let entries = fs::read_dir(root).map_err(|source| ManifestError::Dir {
        path: root.to_path_buf(),
        source,
    })?;
    let mut listing = Listing::default();
    listing.visit(root, entries);
    listing.files.sort();
    Ok(listing)
}

/// Fails unless `root` is a directory (or a link to one).
pub(super) fn ensure_dir(root: &Path) -> Result<(), ManifestError> {
    let metadata = fs::metadata(root).map_err(|source| ManifestError::Dir {
        path: root.to_path_buf(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(ManifestError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

impl Listing {
    fn visit(&mut self, dir: &Path, entries: fs::ReadDir) {
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    self.errors.push(io_error(dir, &error));
                    continue;
                }
            };
            // Hidden names are editor swap files and, in a ConfigMap volume, the `..data` and
            // `..<timestamp>` directories that the visible names already link into.
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                // Symlinks are not followed into directories, where they could loop.
                Ok(kind) if kind.is_dir() => match fs::read_dir(&path) {
                    Ok(entries) => self.visit(&path, entries),
                    Err(error) => self.errors.push(io_error(&path, &error)),
                },
                // `is_file` follows symlinks: a ConfigMap volume links each key to `..data/key`.
                Ok(_) if is_manifest_name(&path) && path.is_file() => self.files.push(path),
                Ok(_) => {}
                Err(error) => self.errors.push(io_error(&path, &error)),
            }
        }
    }
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| {
        ["yaml", "yml", "json"]
            .iter()
            .any(|e| ext.eq_ignore_ascii_case(e))
    })
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

fn io_error(path: &Path, error: &io::Error) -> FileError {
    FileError {
        path: path.to_path_buf(),
        line: None,
        message: error.to_string(),
    }
}

/// One object read from a file: a whole document, or one item of a `kind: List`.
#[derive(Debug)]
pub(super) struct Document {
    pub value: Value,
    /// Line where the document starts; unknown for JSON.
    pub line: Option<u64>,
}

/// Reads and parses one manifest file into its objects.
pub(super) fn read(path: &Path) -> Result<Vec<Document>, FileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        // Removed between listing and reading (an editor's rename, a ConfigMap update): the
        // change that removed it triggers another load anyway.
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "manifest file vanished while loading");
            return Ok(Vec::new());
        }
        Err(error) => return Err(io_error(path, &error)),
    };
    let documents = if is_json(path) {
        parse_json(&text)
    } else {
        parse_yaml(&text)
    };
    let documents = documents.map_err(|(line, message)| FileError {
        path: path.to_path_buf(),
        line,
        message,
    })?;
    let mut objects = Vec::with_capacity(documents.len());
    for document in documents {
        flatten(document, &mut objects);
    }
    Ok(objects)
}

/// A parse error: its line, if the parser knows it, and its message.
type ParseError = (Option<u64>, String);

fn parse_json(text: &str) -> Result<Vec<Document>, ParseError> {
    let value = serde_json::from_str(text).map_err(|e| (u64::try_from(e.line()).ok(), e.to_string()))?;
    Ok(vec![Document { value, line: None }])
}

fn parse_yaml(text: &str) -> Result<Vec<Document>, ParseError> {
    // Snippets would spread one error over several log lines; the message keeps the location.
    let options = serde_saphyr::options! { with_snippet: false };
    let documents: Vec<Spanned<Value>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| (e.location().map(|l| l.line()), e.to_string()))?;
    Ok(documents
        .into_iter()
        .map(|d| Document {
            line: Some(d.referenced.line()).filter(|&l| l != 0),
            value: d.value,
        })
        .collect())
}

/// Expands `kind: List` (what `kubectl get -o yaml` writes) into its items.
fn flatten(document: Document, out: &mut Vec<Document>) {
    let Document { mut value, line } = document;
    if value.get("kind").and_then(Value::as_str) != Some("List") {
        out.push(Document { value, line });
        return;
    }
    let items = match value.get_mut("items") {
        Some(Value::Array(items)) => std::mem::take(items),
        // A List without items is empty, as kubectl reads it.
        None | Some(Value::Null) => return,
        // Left for the decoder to report, with the document's line.
        Some(_) => {
            out.push(Document { value, line });
            return;
        }
    };
    for value in items {
        flatten(Document { value, line }, out);
    }
}

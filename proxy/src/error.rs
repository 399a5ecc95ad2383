//! Why talking to nft failed.

use std::{io, process::ExitStatus};

/// A failed `nft` run. A transaction that nft refused changed nothing: the kernel applies
/// a transaction whole or not at all.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not be started (not installed, not on PATH, no permission).
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The transaction could not be written to nft's standard input, or its output read.
    #[error("cannot talk to {program}: {source}")]
    Io {
        program: String,
        #[source]
        source: io::Error,
    },
    /// nft ran and refused: a syntax error, a missing kernel feature, a conflicting element.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: ExitStatus,
        /// What nft printed, cut to a few kilobytes: nft echoes the offending line, which
        /// may hold thousands of elements.
        stderr: String,
    },
}

//! Running `nft`: one process per transaction, the script on its standard input.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::{io::AsyncWriteExt, process::Command};

use crate::{error::NftError, nft::Transaction};

/// How much of nft's error output an error keeps.
const MAX_STDERR_BYTES: usize = 4096;

/// The command that runs nft: `nft` from PATH by default; tests put it inside a network
/// namespace (`ip netns exec NAME nft`) so they never touch the host's ruleset.
#[derive(Clone, Debug)]
pub struct NftCommand {
    pub program: PathBuf,
    /// Arguments before nft's own, e.g. `netns exec NAME nft` with `ip` as the program.
    pub args_prefix: Vec<String>,
}

impl Default for NftCommand {
    fn default() -> Self {
        Self {
            program: PathBuf::from("nft"),
            args_prefix: Vec::new(),
        }
    }
}

impl NftCommand {
    /// `nft` run inside the network namespace `netns` through `ip netns exec`.
    pub fn in_netns(netns: &str) -> Self {
        Self {
            program: PathBuf::from("ip"),
            args_prefix: ["netns", "exec", netns, "nft"].map(String::from).to_vec(),
        }
    }

    /// Loads `tx` (`nft -f -`): all of it, or nothing if nft refuses any part.
    pub async fn apply(&self, tx: &Transaction) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(&tx.render())).await.map(drop)
    }

    /// Checks `tx` without loading it (`nft -c -f -`): nft parses it and the kernel validates
    /// it against the current ruleset, then the transaction is aborted.
    pub async fn check(&self, tx: &Transaction) -> Result<(), NftError> {
        self.run(&["-c", "-f", "-"], Some(&tx.render())).await.map(drop)
    }

    /// Runs nft with `args`, writing `stdin` to it, and returns its standard output.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        run_tool(&self.program, &self.args_prefix, args, stdin).await
    }
}

/// Runs `program` with `args_prefix` then `args`, writing `stdin` to it, and returns its standard
/// output; a non-zero exit is an error carrying what it printed. Shared by nft and conntrack.
pub(crate) async fn run_tool(
    program_path: &Path,
    args_prefix: &[String],
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NftError> {
    // Named with its prefix in errors: `ip netns exec NAME nft failed`, not `ip failed`.
    let program = std::iter::once(program_path.display().to_string())
        .chain(args_prefix.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let argv: Vec<OsString> = args_prefix
        .iter()
        .map(OsString::from)
        .chain(args.iter().map(OsString::from))
        .collect();
    let mut child = Command::new(program_path)
        .args(&argv)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| NftError::Spawn {
            program: program.clone(),
            source,
        })?;
    // Written while the output is read, so a large script cannot deadlock on full pipes.
    let input = child.stdin.take();
    let write = async {
        if let (Some(mut pipe), Some(text)) = (input, stdin) {
            pipe.write_all(text.as_bytes()).await?;
            pipe.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let (written, output) = tokio::join!(write, child.wait_with_output());
    let output = output.map_err(|source| NftError::Io {
        program: program.clone(),
        source,
    })?;
    // A refused script can make nft exit before reading all of it; its status and
    // message then say more than the broken pipe.
    if !output.status.success() {
        return Err(NftError::Failed {
            program,
            status: output.status,
            stderr: truncated(String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    written.map_err(|source| NftError::Io {
        program: program.clone(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn truncated(text: &str) -> String {
    if text.len() <= MAX_STDERR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_STDERR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{nft::Family, ruleset};

    /// A stand-in for nft that copies its input to a file, or fails: the process handling is
    /// tested without root.
    fn fake(script: &str) -> NftCommand {
        NftCommand {
            program: PathBuf::from("sh"),
            args_prefix: vec!["-c".into(), script.into(), "fake-nft".into()],
        }
    }

    #[tokio::test]
    async fn the_transaction_goes_to_standard_input() {
        let dir = std::env::temp_dir().join(format!("svcnet-apply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("in.nft");
        let nft = fake(&format!("echo \"$@\" > {0}.args; cat > {0}", file.display()));
        let tx = ruleset::cleanup();
        nft.apply(&tx).await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), tx.render());
        assert_eq!(
            std::fs::read_to_string(dir.join("in.nft.args")).unwrap(),
            "-f -\n"
        );
        nft.check(&tx).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("in.nft.args")).unwrap(),
            "-c -f -\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_refusal_carries_status_and_message() {
        let nft = fake("echo 'Error: No such file or directory' >&2; exit 1");
        let mut tx = Transaction::new();
        tx.push(Family::Ipv4, crate::nft::Command::DeleteTable);
        let error = nft.apply(&tx).await.unwrap_err();
        let NftError::Failed { stderr, status, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(status.code(), Some(1));
        assert_eq!(stderr, "Error: No such file or directory");
        assert!(error.to_string().starts_with("sh -c "), "{error}");
        assert!(
            error
                .to_string()
                .contains(" fake-nft failed (exit status: 1): Error: No such"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let nft = NftCommand {
            program: PathBuf::from("/nonexistent/nft"),
            args_prefix: vec![],
        };
        let error = nft.run(&["list", "ruleset"], None).await.unwrap_err();
        assert!(matches!(error, NftError::Spawn { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/nft"), "{error}");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_STDERR_BYTES);
        let cut = truncated(&text);
        assert!(cut.len() < text.len());
        assert!(cut.ends_with("bytes more)"), "{}", &cut[cut.len() - 30..]);
        assert_eq!(truncated("short"), "short");
    }
}

//! The command line as users type it: `check-config` on good and bad files.

use std::process::Command;

fn check_config(yaml: &str) -> (bool, String, String) {
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(file.path(), yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args(["check-config", &file.path().display().to_string()])
        .output()
        .expect("run svcnet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let (ok, stdout, stderr) = check_config("manifests: examples/cluster\ndns-ttl: 5\npods: verified\n");
    assert!(ok, "{stderr}");
    // Given keys and kubeadm defaults both appear, in the file's own syntax.
    assert!(stdout.contains("dns-ttl: 5"), "{stdout}");
    assert!(stdout.contains("pods: verified"), "{stdout}");
    assert!(stdout.contains("cluster-domain: cluster.local"), "{stdout}");
    assert!(
        stdout.contains("127.0.0.1:5353"),
        "the manifests default listen address: {stdout}"
    );
}

#[test]
fn check_config_names_every_bad_key() {
    let (ok, _, stderr) = check_config("dns-ttl: 4000\npods: sometimes\n");
    assert!(!ok);
    assert!(stderr.contains("pods"), "{stderr}");
    let (ok, _, stderr) = check_config("dns-ttl: 4000\n");
    assert!(!ok);
    assert!(stderr.contains("dns-ttl") && stderr.contains("3600"), "{stderr}");
    let (ok, _, stderr) = check_config("colour: blue\n");
    assert!(!ok);
    assert!(
        stderr.contains("colour") && stderr.contains("cluster-domain"),
        "unknown key and the allowed ones: {stderr}"
    );
}

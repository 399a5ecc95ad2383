//! Name syntax checks: Kubernetes object names (DNS-1123) and DNS domain names.

/// A Kubernetes DNS-1123 label (namespace names): 1 to 63 of `a-z`, `0-9`, `-`, starting and
/// ending with a letter or digit.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_lowercase_ldh_label(s)
}

/// A Kubernetes DNS-1123 subdomain (node names): at most 253 characters, dot-separated
/// lowercase labels. Kubernetes limits only the total length, not each label.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_lowercase_ldh_label)
}

fn is_lowercase_ldh_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// `s` as a lowercase fully qualified domain name (trailing dot), or `None` if it is not a
/// host-style domain name: dot-separated labels of letters, digits and `-`, each 1 to 63
/// characters and not starting or ending with `-`, 253 characters at most. The root (`.`) is
/// not accepted: svcnet is authoritative only for the zones it serves.
pub(crate) fn fqdn(s: &str) -> Option<String> {
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|label| label.len() <= 63 && is_lowercase_ldh_label(label));
    ok.then(|| name + ".")
}

#[cfg(test)]
mod tests;

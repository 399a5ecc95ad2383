use std::io::Write;

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn upstream_port_defaults_to_53() {
    assert_eq!(upstream("10.0.0.2").unwrap(), sa("10.0.0.2:53"));
    assert_eq!(upstream("10.0.0.2:5353").unwrap(), sa("10.0.0.2:5353"));
    assert_eq!(upstream("fd00::2").unwrap(), sa("[fd00::2]:53"));
    assert_eq!(upstream("[fd00::2]:54").unwrap(), sa("[fd00::2]:54"));
    assert!(upstream("dns.google").is_err());
    assert!(upstream("10.0.0.2:0").unwrap_err().contains("port 0"));
}

#[test]
fn listen_needs_a_port() {
    assert_eq!(listen("[::]:53").unwrap(), sa("[::]:53"));
    assert!(listen("127.0.0.1").unwrap_err().contains("ADDR:PORT"));
}

#[test]
fn self_detection() {
    let listen = [sa("0.0.0.0:53"), sa("10.0.0.9:5353")];
    assert!(is_self(sa("127.0.0.53:53"), &listen));
    assert!(is_self(sa("10.0.0.9:5353"), &listen));
    assert!(!is_self(sa("10.0.0.9:53"), &[sa("127.0.0.1:53")]));
    assert!(!is_self(sa("127.0.0.53:53"), &[sa("127.0.0.1:5353")]));
}

#[test]
fn resolv_conf() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "# comment\nsearch example.org\nnameserver 10.0.0.2\nnameserver\tfd00::2\n\
         nameserver fe80::1%eth0\noptions ndots:5\n;nameserver 10.0.0.3\n"
    )
    .unwrap();
    assert_eq!(
        resolv_conf_nameservers(file.path()),
        [sa("10.0.0.2:53"), sa("[fd00::2]:53")]
    );
    assert_eq!(resolv_conf_nameservers(Path::new("/nonexistent/resolv.conf")), []);
}

//! A Pod's view of DNS, reproduced: the `/etc/resolv.conf` kubelet writes for it
//! ([`kubelet::pod_resolv_conf`]) and the queries its C library sends for one lookup
//! ([`walk`]). The `svcnet resolv-conf` and `svcnet resolve` tools are built on these, and so is
//! svcnet's own search-path completion: all three must agree with what kubelet and libc do.

pub mod client;
pub mod conf;
pub mod kubelet;
pub mod walk;

pub use conf::ResolvConf;

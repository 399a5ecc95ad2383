//! The DNS debugging tools: `svcnet resolv-conf` and `svcnet resolve`. Both use the same kubelet
//! and libc rules as svcnet's server side (crate `svcnet-resolv`).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use svcnet_resolv::{
    ResolvConf,
    client::StubClient,
    kubelet::{ClusterDns, pod_resolv_conf},
    walk::{Libc, walk},
};

/// Where the Pod's DNS settings come from.
#[derive(clap::Args)]
pub struct PodDns {
    /// A Pod manifest (YAML or JSON); its dnsPolicy, dnsConfig, hostNetwork and namespace count.
    #[arg(long, conflicts_with = "namespace")]
    pod: Option<PathBuf>,
    /// Instead of --pod: a ClusterFirst Pod in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// kubelet's --cluster-dns (repeatable).
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: Vec<String>,
    /// kubelet's --cluster-domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// kubelet's --resolv-conf: the node's own resolver configuration.
    #[arg(long, default_value = "/etc/resolv.conf")]
    node_resolv_conf: PathBuf,
}

#[derive(clap::Args)]
pub struct ResolveArgs {
    /// The name as a program in the Pod would pass it to getaddrinfo.
    name: String,
    #[command(flatten)]
    pod: PodDns,
    /// The DNS server to ask; by default the Pod's first nameserver, port 53.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// Follow musl's rules (Alpine images) instead of glibc's.
    #[arg(long)]
    musl: bool,
}

impl PodDns {
    /// The resolv.conf kubelet writes for the Pod, with kubelet's warnings.
    fn resolv_conf(&self) -> anyhow::Result<(ResolvConf, Vec<String>)> {
        let pod: Pod = match (&self.pod, &self.namespace) {
            (Some(path), _) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                serde_saphyr::from_str(&text)
                    .with_context(|| format!("{}: not a Pod manifest", path.display()))?
            }
            (None, Some(ns)) => {
                let mut pod = Pod::default();
                pod.metadata.namespace = Some(ns.clone());
                pod
            }
            (None, None) => bail!("give --pod FILE or --namespace NS"),
        };
        // A node without a resolv.conf is a node without upstream settings, not an error.
        let node = std::fs::read_to_string(&self.node_resolv_conf)
            .map(|t| ResolvConf::parse(&t))
            .unwrap_or_default();
        let cluster = ClusterDns {
            servers: self.cluster_dns.clone(),
            domain: self.cluster_domain.clone(),
        };
        let written = pod_resolv_conf(&pod, &cluster, &node)?;
        Ok((written.conf, written.warnings))
    }
}

/// `svcnet resolv-conf`: prints the file, kubelet's warnings to stderr.
pub fn resolv_conf(args: &PodDns) -> anyhow::Result<()> {
    let (conf, warnings) = args.resolv_conf()?;
    for warning in warnings {
        eprintln!("kubelet would warn: {warning}");
    }
    print!("{conf}");
    Ok(())
}

/// `svcnet resolve`: every query of the walk, then the answer. Returns whether it resolved.
pub async fn resolve(args: &ResolveArgs) -> anyhow::Result<bool> {
    let (conf, _) = args.pod.resolv_conf()?;
    let server = match args.server {
        Some(server) => server,
        None => {
            let first = conf
                .nameservers
                .first()
                .context("the Pod's resolv.conf has no nameserver")?;
            SocketAddr::new(
                first.parse().with_context(|| format!("nameserver `{first}`"))?,
                53,
            )
        }
    };
    let libc = if args.musl { Libc::Musl } else { Libc::Glibc };
    println!(
        "# {libc:?} rules, search {:?}, ndots {}, asking {server}",
        conf.searches,
        conf.ndots()
    );
    let walked = walk(&args.name, &conf, libc, &mut StubClient::new(server)).await;
    for (i, step) in walked.steps.iter().enumerate() {
        println!("{:>2}. {step}", i + 1);
    }
    match walked.result {
        Ok(addresses) => {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            println!("=> {} ({} queries)", list.join(" "), walked.steps.len());
            Ok(true)
        }
        Err(why) => {
            println!("=> not resolved: {why} ({} queries)", walked.steps.len());
            Ok(false)
        }
    }
}

//! The `svcnet` binary: command line and wiring only.

mod reload;
mod tools;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use svcnet_admin::{AdminError, Endpoint, Probes};
use svcnet_cluster::{
    PodScope, Publisher, Reader, SourceOptions, apiserver::ApiServerSource, manifests::ManifestSource,
};
use svcnet_config::{AdminConfig, Config, PodsMode, ProxyMode, Settings, Source};
use svcnet_dns::{DnsMetrics, DnsServer, NodeDns};
use svcnet_proxy::{
    Backend, ConntrackCommand, NftCommand, NodeContext, Proxy, ProxyHealth, ProxyMetrics,
    ServiceHealthServers, SyncPeriods, ruleset,
};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "svcnet",
    version,
    about = "Service networking for Kubernetes nodes: cluster DNS and the Service proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve cluster DNS and, with `--proxy apply`, program the Service proxy on this node.
    Run(Box<RunArgs>),
    /// Print the Service proxy's nftables rules for a directory of manifests, exactly as a
    /// full sync would load them, and exit (needs `--manifests` and `--node-name`).
    RenderRules(Box<RunArgs>),
    /// Delete svcnet's nftables tables (`ip svcnet`, `ip6 svcnet`), e.g. after switching back
    /// to kube-proxy. `svcnet run` never deletes them itself, so traffic keeps flowing while it
    /// restarts.
    Cleanup,
    /// Validate a configuration file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Print the /etc/resolv.conf kubelet writes for a Pod.
    ResolvConf(tools::PodDns),
    /// Resolve a name as a Pod's C library would, printing every query it sends.
    Resolve(Box<tools::ResolveArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// YAML configuration file; every key is also a flag below, and flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match svcnet_config::check_file(&file) {
            Ok(config) => {
                print!("{}", config.to_yaml());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("invalid configuration\n{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_tracing();
            // Kept to load the configuration again on reload.
            let sources = (args.config.clone(), args.settings.clone());
            let Some(config) = load_config(*args) else {
                return ExitCode::FAILURE;
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(error) => {
                    eprintln!("cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config, sources)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::RenderRules(args) => {
            // Warnings about skipped manifests go to stderr; stdout holds only the rules.
            init_tracing();
            let Some(config) = load_config(*args) else {
                return ExitCode::FAILURE;
            };
            match render_rules(&config) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ResolvConf(args) => report(tools::resolv_conf(&args)),
        Command::Resolve(args) => {
            let resolved = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|rt| rt.block_on(tools::resolve(&args)));
            match resolved {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(2),
                Err(error) => report(Err(error)),
            }
        }
        Command::Cleanup => {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|rt| {
                    rt.block_on(NftCommand::default().apply(&ruleset::cleanup()))
                        .context("deleting the svcnet tables")
                });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The exit code for a command's result, after printing the error.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration `args` give, or `None` after printing why it is invalid.
fn load_config(args: RunArgs) -> Option<Config> {
    svcnet_config::load(args.config.as_deref(), args.settings)
        .inspect_err(|errors| eprintln!("invalid configuration\n{errors}"))
        .ok()
}

/// The full ruleset for the manifests of `config`, loaded once.
fn render_rules(config: &Config) -> anyhow::Result<String> {
    let Source::Manifests(dir) = &config.source else {
        anyhow::bail!("render-rules reads a directory of manifests: give --manifests DIR");
    };
    if config.node_name.is_none() {
        anyhow::bail!("render-rules needs --node-name: which endpoints are local decides the rules");
    }
    let mut state = svcnet_cluster::ClusterState::default();
    ManifestSource::new(dir, source_options(config)).load(&mut state)?;
    let node = node_context(config)?;
    let desired = svcnet_proxy::desired(&state.snapshot(true), &node);
    Ok(ruleset::full(&desired).render())
}

fn node_context(config: &Config) -> anyhow::Result<NodeContext> {
    NodeContext::discover(
        config.node_name.clone(),
        &config.proxy.nodeport_addresses,
        config.proxy.cluster_cidrs.clone(),
    )
    .context("listing the node's addresses for nodeport-addresses")
}

fn init_tracing() {
    // hickory logs two INFO lines per query; at that level logging costs a fifth of the
    // throughput, so it is held at WARN unless RUST_LOG asks otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,hickory_server=warn,hickory_proto=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Serves `config`, loaded from `sources` (the config file and the flags), which are read
/// again on reload.
async fn run(config: Config, sources: (Option<PathBuf>, Settings)) -> anyhow::Result<()> {
    // Listened for from here on: a SIGTERM while starting (the first sync, the loop check)
    // stops svcnet cleanly rather than killing it.
    let mut shutdown = std::pin::pin!(shutdown_signal().context("listening for SIGTERM")?);
    let probes = Arc::new(Probes::default());
    // Every part registers its metrics here before the registry is served on `metrics-listen`.
    let mut registry = Registry::default();
    let dns_metrics = DnsMetrics::default();
    dns_metrics.register(&mut registry);
    dns_metrics.count_panics();
    let (publisher, mut reader) = svcnet_cluster::channel();
    // Watching before the source publishes, so that the first sync is seen as a change.
    tokio::spawn(dns_metrics.watch_programming_latency(reader.clone()));
    let source = start_source(&config, publisher, &mut registry).await?;
    // The proxy's /healthz, served with the other endpoints.
    let mut proxy_healthz = None;
    let proxy = match config.proxy.mode {
        ProxyMode::Off => None,
        mode => {
            let node = node_context(&config)?;
            info!(
                ?mode,
                node_name = node.node_name.as_deref().unwrap_or(""),
                nodeport_addresses = ?node.nodeport_addresses,
                cluster_cidrs = ?node.cluster_cidrs,
                "starting the Service proxy"
            );
            if node.node_name.is_none() {
                warn!("no node-name: no endpoint counts as local to this node");
            }
            let backend = match mode {
                ProxyMode::Apply => Backend::Apply(NftCommand::default()),
                _ => Backend::DryRun,
            };
            let periods = SyncPeriods {
                min: config.proxy.min_sync_period,
                full: config.proxy.full_sync_period,
            };
            // kube-proxy binds healthCheckNodePorts on every address when NodePorts are.
            let health_check_bind = if config.proxy.nodeport_addresses.is_empty() {
                Vec::new()
            } else {
                node.nodeport_addresses.clone()
            };
            let health = Arc::new(ProxyHealth::new(config.proxy.sync_period));
            let metrics = ProxyMetrics::register(&mut registry);
            let mut proxy = Proxy::new(node, backend, periods)
                .with_health(Arc::clone(&health))
                .with_metrics(metrics.clone());
            // Only a proxy that programs the node may touch its conntrack table, or tell a load
            // balancer that the node serves a Service.
            if mode == ProxyMode::Apply {
                proxy = proxy.with_conntrack(ConntrackCommand::default());
                proxy = proxy.with_service_health(ServiceHealthServers::new(
                    health_check_bind,
                    Arc::clone(&health),
                    config.proxy.sync_period,
                ));
            }
            if let Some(addr) = config.proxy.healthz_listen {
                let router = svcnet_proxy::health::router(health, metrics);
                proxy_healthz = Some(Endpoint::new("proxy-healthz", addr, router).await?);
            }
            Some(tokio::spawn(proxy.run(reader.clone())))
        }
    };
    let proxy_stopped = async {
        match proxy {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };

    let mut admin = serve_admin(&config.admin, Arc::clone(&probes), registry).await?;
    if let Some(endpoint) = proxy_healthz {
        admin.spawn(endpoint.serve());
    }

    let synced = tokio::select! {
        synced = reader.wait_synced(config.dns.startup_timeout) => synced,
        () = &mut shutdown => return stopped(),
    };
    if !synced {
        warn!(
            timeout = ?config.dns.startup_timeout,
            "cluster state not synced yet; serving anyway, with SERVFAIL for names not known so far"
        );
    }
    // kubelet appends the node's search domains to a ClusterFirst Pod's: completion needs them.
    let node_dns = NodeDns::read(config.node_name.clone(), std::path::Path::new("/etc/resolv.conf"));
    let dns = DnsServer::bind(&config.dns, node_dns, reader.clone(), dns_metrics)
        .await
        .context("starting DNS")?;
    let (file, flags) = sources;
    let reloads = reload::Reloader::new(file, flags, config.clone(), dns.reloader()).run();
    tokio::spawn(async move {
        if let Err(error) = reloads.await {
            error!(%error, "configuration reload is off");
        }
    });
    tokio::spawn(ready_when_synced(reader, Arc::clone(&probes)));
    tokio::select! {
        result = dns.check_loop() => result.context("checking the upstreams")?,
        () = &mut shutdown => return stopped(),
    }
    let lameduck = config.admin.lameduck;
    let drained = async {
        shutdown.await;
        // CoreDNS `lameduck`: /ready fails at once, so the endpoint leaves the kube-dns Service
        // and clients move on, while queries that still arrive are answered for `lameduck`.
        probes.start_lame_duck();
        if !lameduck.is_zero() {
            info!(?lameduck, "lame duck: not ready, still answering");
            tokio::time::sleep(lameduck).await;
        }
    };
    tokio::select! {
        result = dns.run(drained) => result.context("DNS server")?,
        result = source => {
            result.context("cluster source task")?.context("cluster source")?;
        }
        result = proxy_stopped => {
            result.context("Service proxy task")?;
            anyhow::bail!("the Service proxy stopped: the cluster source is gone");
        }
        Some(result) = admin.join_next() => {
            result.context("HTTP endpoint task")??;
            anyhow::bail!("an HTTP endpoint stopped");
        }
    }
    stopped()
}

fn stopped() -> anyhow::Result<()> {
    info!("stopped");
    Ok(())
}

/// Binds the operator's endpoints `config` enables and serves them until one fails.
async fn serve_admin(
    config: &AdminConfig,
    probes: Arc<Probes>,
    registry: Registry,
) -> Result<JoinSet<Result<(), AdminError>>, AdminError> {
    let mut endpoints = Vec::new();
    if let Some(addr) = config.health_listen {
        endpoints.push(Endpoint::health(addr).await?);
    }
    if let Some(addr) = config.ready_listen {
        endpoints.push(Endpoint::ready(addr, probes).await?);
    }
    if let Some(addr) = config.metrics_listen {
        endpoints.push(Endpoint::metrics(addr, Arc::new(registry)).await?);
    }
    let mut servers = JoinSet::new();
    for endpoint in endpoints {
        servers.spawn(endpoint.serve());
    }
    Ok(servers)
}

/// Ready once the cluster state has synced, as CoreDNS's kubernetes plugin is once its
/// informers have.
async fn ready_when_synced(mut reader: Reader, probes: Arc<Probes>) {
    while !reader.load().synced {
        if !reader.changed().await {
            return;
        }
    }
    probes.set_synced();
}

fn source_options(config: &Config) -> SourceOptions {
    SourceOptions {
        pods: match (&config.dns.pods, &config.node_name) {
            // `pods verified` must know every Pod's address, not only this node's.
            (PodsMode::Verified, _) => PodScope::All,
            (_, Some(node)) => PodScope::Node(node.clone()),
            (_, None) => PodScope::None,
        },
        endpoint_slices: !config.dns.noendpoints,
    }
}

/// Starts the cluster source, its metrics registered in `registry`; the task ends only on
/// an error.
async fn start_source(
    config: &Config,
    publisher: Publisher,
    registry: &mut Registry,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let options = source_options(config);
    Ok(match &config.source {
        Source::Manifests(dir) => {
            let source = ManifestSource::new(dir, options);
            tokio::spawn(async move { Ok(source.run(publisher).await?) })
        }
        Source::ApiServer { kubeconfig } => {
            let source = ApiServerSource::connect(kubeconfig.as_deref(), options).await?;
            source.metrics().register(registry);
            tokio::spawn(async move { Ok(source.run(publisher).await?) })
        }
    })
}

/// Resolves on SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C). The handlers are
/// installed by the call, not on the first poll, so no signal is missed while starting.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("interrupt received"),
        }
    })
}

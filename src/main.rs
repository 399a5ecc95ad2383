//! The `svcnet` binary: command line and wiring only.

mod tools;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use svcnet_cluster::{
    PodScope, Publisher, SourceOptions, apiserver::ApiServerSource, manifests::ManifestSource,
};
use svcnet_config::{Config, PodsMode, ProxyMode, Settings, Source};
use svcnet_dns::DnsServer;
use svcnet_proxy::{Backend, NftCommand, NodeContext, Proxy, SyncPeriods, ruleset};
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
            match runtime.block_on(run(config)) {
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

async fn run(config: Config) -> anyhow::Result<()> {
    let (publisher, mut reader) = svcnet_cluster::channel();
    let source = tokio::spawn(run_source(config.clone(), publisher));
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
            Some(tokio::spawn(
                Proxy::new(node, backend, periods).run(reader.clone()),
            ))
        }
    };
    let proxy_stopped = async {
        match proxy {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };

    if !reader.wait_synced(config.dns.startup_timeout).await {
        warn!(
            timeout = ?config.dns.startup_timeout,
            "cluster state not synced yet; serving anyway, with SERVFAIL for names not known so far"
        );
    }
    let dns = DnsServer::bind(&config.dns, reader)
        .await
        .context("starting DNS")?;
    dns.check_loop().await.context("checking the upstreams")?;
    tokio::select! {
        result = dns.run(shutdown_signal()) => result.context("DNS server")?,
        result = source => {
            result.context("cluster source task")?.context("cluster source")?;
        }
        result = proxy_stopped => {
            result.context("Service proxy task")?;
            anyhow::bail!("the Service proxy stopped: the cluster source is gone");
        }
    }
    info!("stopped");
    Ok(())
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

async fn run_source(config: Config, publisher: Publisher) -> anyhow::Result<()> {
    let options = source_options(&config);
    match &config.source {
        Source::Manifests(dir) => ManifestSource::new(dir, options).run(publisher).await?,
        Source::ApiServer { kubeconfig } => {
            ApiServerSource::connect(kubeconfig.as_deref(), options)
                .await?
                .run(publisher)
                .await?
        }
    }
    Ok(())
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received"),
    }
}

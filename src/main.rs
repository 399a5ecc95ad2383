//! The `svcnet` binary: command line and wiring only.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use svcnet_cluster::{
    PodScope, Publisher, SourceOptions, apiserver::ApiServerSource, manifests::ManifestSource,
};
use svcnet_config::{Config, PodsMode, Settings, Source};
use svcnet_dns::DnsServer;
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
    /// Serve cluster DNS (and, later, program the Service proxy) on this node.
    Run(Box<RunArgs>),
    /// Validate a configuration file and print the effective configuration.
    CheckConfig { file: PathBuf },
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
            let config = match svcnet_config::load(args.config.as_deref(), args.settings) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("invalid configuration\n{errors}");
                    return ExitCode::FAILURE;
                }
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
    }
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

    if !reader.wait_synced(config.dns.startup_timeout).await {
        warn!(
            timeout = ?config.dns.startup_timeout,
            "cluster state not synced yet; serving anyway, with SERVFAIL for names not known so far"
        );
    }
    let dns = DnsServer::bind(&config.dns, reader)
        .await
        .context("starting DNS")?;
    tokio::select! {
        result = dns.run(shutdown_signal()) => result.context("DNS server")?,
        result = source => {
            result.context("cluster source task")?.context("cluster source")?;
        }
    }
    info!("stopped");
    Ok(())
}

async fn run_source(config: Config, publisher: Publisher) -> anyhow::Result<()> {
    let options = SourceOptions {
        pods: match (&config.dns.pods, &config.node_name) {
            // `pods verified` must know every Pod's address, not only this node's.
            (PodsMode::Verified, _) => PodScope::All,
            (_, Some(node)) => PodScope::Node(node.clone()),
            (_, None) => PodScope::None,
        },
        endpoint_slices: !config.dns.noendpoints,
    };
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

//! The `tailgate` binary: parse the command line, set up logging, load the config, run.

use anyhow::Context;
use clap::Parser;
use tailgate::cli::{Cli, Command, PluginCommand};
use tailgate::config::LogFormat;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tailgate: {e}");
            std::process::exit(1);
        }
    };
    // Replay prints a report on standard output; only problems go to standard error.
    let level = match cli.command {
        Some(Command::Replay { .. }) => "warn",
        _ => config.service.log_level.as_str(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.service.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    match cli.command {
        Some(Command::Validate) => {
            tailgate::policy::load(&config).context("policy")?;
            println!(
                "{}: ok",
                cli.config
                    .as_ref()
                    .map_or("built-in default".into(), |p| p.display().to_string())
            );
            Ok(())
        }
        Some(Command::Replay {
            input,
            output,
            json,
        }) => match tailgate::replay::replay(&config, &input, output.as_deref()) {
            Ok(report) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.to_text());
                }
                if let Some(o) = output {
                    eprintln!("kept spans written to {}", o.display());
                }
                Ok(())
            }
            Err(e) => {
                eprintln!("tailgate: {e}");
                std::process::exit(1);
            }
        },
        Some(Command::Plugin {
            command: PluginCommand::List,
        }) => {
            print!("{}", tailgate::cli::builtin_plugin_list());
            Ok(())
        }
        Some(Command::Plugin {
            command: PluginCommand::Check { file },
        }) => match tailgate::plugin::check(&file) {
            Ok(info) => {
                let kind = match info.world {
                    tailgate::plugin::PluginWorld::Sampler => "sampler",
                    tailgate::plugin::PluginWorld::Redactor => "redactor",
                };
                println!(
                    "{}: {kind} ({}, contract version {})",
                    file.display(),
                    info.world_name(),
                    info.version
                );
                println!("  exports  {}", info.export);
                println!("  imports  {}", info.imports.join(", "));
                println!(
                    "  size     {} bytes, sha256 {}",
                    info.size_bytes, info.sha256
                );
                println!(
                    "  compile  {:.1?}{}",
                    info.compile_time,
                    if info.from_cache {
                        " (from the compiled-code cache)"
                    } else {
                        ""
                    }
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("tailgate: {e}");
                std::process::exit(1);
            }
        },
        Some(Command::Run) | None => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let run = async {
                match &cli.config {
                    // From a file: reloadable (file change, SIGHUP, POST /reload).
                    Some(path) => {
                        tailgate::app::run_from_file(path, &cli.overrides, shutdown_signal()).await
                    }
                    None => tailgate::app::run(config, shutdown_signal()).await,
                }
            };
            let result = rt.block_on(run);
            // Everything that settles spans has ended by now (`app::run` returns after the shutdown
            // deadline at the latest). Dropping the runtime would wait for any blocking task still
            // running (a plugin compile of a reload cut short, say) without bound: leave those behind.
            rt.shutdown_background();
            result.context("tailgate")
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

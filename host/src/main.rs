//! The `tailgate` binary: parse the command line, set up logging, load the config, run.

use anyhow::Context;
use clap::Parser;
use tailgate::cli::{Cli, Command, ConfigCommand, PluginCommand};
use tailgate::config::LogFormat;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = if cli.needs_config() {
        match cli.load_config() {
            Ok(c) => c,
            Err(e) => fail(e),
        }
    } else {
        tailgate::config::Config::default()
    };
    // Replay and plugin test print a report on standard output; only problems go to standard error.
    let level = match cli.command {
        Some(Command::Replay { .. })
        | Some(Command::Plugin {
            command: PluginCommand::Test { .. },
        }) => "warn",
        _ => config.service.log_level.as_str(),
    };
    // `--log-level` (or TAILGATE_LOG_LEVEL) wins over RUST_LOG, which wins over the file.
    let filter = match (&cli.overrides.log_level, EnvFilter::try_from_default_env()) {
        (None, Ok(from_env)) => from_env,
        _ => EnvFilter::try_new(level)
            .unwrap_or_else(|e| fail(format!("log level `{level}` is not a valid filter: {e}"))),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.service.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let config_name = cli
        .config_path()
        .map_or("built-in default".into(), |p| p.display().to_string());
    match cli.command {
        Some(Command::Validate { .. }) => {
            tailgate::policy::load(&config).context("policy")?;
            println!("{config_name}: ok");
            Ok(())
        }
        Some(Command::Config {
            command: ConfigCommand::Print { .. },
        }) => {
            print!(
                "# the effective configuration of {config_name}, environment and flags applied\n{}",
                tailgate::cli::config_yaml(&config).unwrap_or_else(|e| fail(e))
            );
            Ok(())
        }
        Some(Command::Migrate {
            from_otelcol,
            output,
        }) => {
            let origin = from_otelcol.display().to_string();
            let text = std::fs::read_to_string(&from_otelcol)
                .unwrap_or_else(|e| fail(format!("cannot read {origin}: {e}")));
            let m = tailgate::config::otelcol::migrate(&text, &origin).unwrap_or_else(|e| fail(e));
            match &output {
                Some(out) => {
                    std::fs::write(out, &m.yaml)
                        .unwrap_or_else(|e| fail(format!("cannot write {}: {e}", out.display())));
                    eprintln!(
                        "wrote {} ({} note(s) in its header)",
                        out.display(),
                        m.notes.len()
                    );
                }
                None => print!("{}", m.yaml),
            }
            Ok(())
        }
        Some(Command::Config {
            command: ConfigCommand::Schema,
        }) => {
            println!("{}", tailgate::cli::config_schema());
            Ok(())
        }
        Some(Command::Plugin {
            command:
                PluginCommand::Test {
                    plugin,
                    traces,
                    config,
                    call_timeout,
                    memory_limit,
                    json,
                },
        }) => {
            let test = tailgate::replay::plugin_test::PluginTest {
                plugin,
                config: tailgate::cli::plugin_config_arg(&config).unwrap_or_else(|e| fail(e)),
                traces,
                call_timeout,
                memory_limit: memory_limit.as_usize(),
            };
            let report = tailgate::replay::plugin_test::run(&test).unwrap_or_else(|e| fail(e));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            if !report.ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Replay {
            input,
            output,
            json,
            ..
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
            Err(e) => fail(e),
        },
        Some(Command::Plugin {
            command: PluginCommand::Wit { dir },
        }) => {
            let written = tailgate::plugin::builtin::write_contract(&dir).unwrap_or_else(|e| {
                fail(format!(
                    "cannot write the contract into {}: {e}",
                    dir.display()
                ))
            });
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
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
            Err(e) => fail(e),
        },
        Some(Command::Run { .. }) | None => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let run = async {
                match cli.config_path() {
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

/// Prints `tailgate: <error>` on standard error and exits with status 1.
fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("tailgate: {e}");
    std::process::exit(1);
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

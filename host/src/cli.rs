//! The command line: `tailgate [--config FILE]` runs the proxy, `tailgate validate [FILE]` checks a
//! configuration, `tailgate config print` shows the effective one (file, environment and flags applied;
//! secrets as `<redacted>`), `tailgate config schema` prints its JSON Schema, `tailgate replay --config
//! FILE traces.pb` runs a recording through a policy offline, `tailgate plugin check FILE.wasm` inspects a
//! plugin, `tailgate plugin test FILE.wasm TRACES` runs one over recorded traces, `tailgate plugin list`
//! lists the built-in ones.

use crate::config::{Config, ConfigError, Overrides};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `tailgate --version`: the crate version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("TAILGATE_GIT_REV"),
    ")"
);

/// tailgate: a tail-sampling, PII-redacting OpenTelemetry trace proxy with WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(name = "tailgate", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Configuration file (YAML). Without it tailgate runs on the built-in defaults: receive on
    /// 0.0.0.0:4317/4318, keep every trace, export OTLP/gRPC to http://localhost:4317.
    #[arg(long, short, env = "TAILGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub overrides: Overrides,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--config FILE` of a subcommand (the same as before the subcommand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFile {
    /// Configuration file (YAML); also `TAILGATE_CONFIG`.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Check a configuration file (`FILE` or `--config FILE`) and its plugins, and exit: 0 when valid,
    /// 1 with a message naming the problem.
    Validate {
        /// The configuration file.
        file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Show the configuration or its schema.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run recorded traces (from `--record`) through the policy of `--config` offline and report what it
    /// would keep, drop and redact.
    Replay {
        /// The recording: `.json`/`.jsonl` (OTLP/JSON lines) or `.pb` (length-delimited protobuf).
        input: PathBuf,
        /// Write the kept (redacted, annotated) spans here, in the format of its extension.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Write the tailgate configuration equivalent to a Collector configuration's `tail_sampling`
    /// processor (YAML on standard output, or `--output FILE`); its header names every policy that maps
    /// only approximately or not at all, and why.
    Migrate {
        /// The Collector configuration file.
        #[arg(long = "from-otelcol", value_name = "FILE")]
        from_otelcol: PathBuf,
        /// Write the result here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (the file, then environment and flags, defaults filled in) as
    /// YAML. Secrets (tokens, the hash key, header values, credential-like Kafka options) print as
    /// `<redacted>`.
    Print {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Print the JSON Schema of the configuration file (for editors: see the first line of
    /// `examples/tailgate.yaml`).
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a component and report which world it implements.
    Check {
        /// The `.wasm` component, or `builtin:NAME`.
        file: PathBuf,
    },
    /// List the plugins built into this binary (`plugin: builtin:NAME`), with their options and version.
    List,
    /// Write the plugin contract (the WIT files of every version this binary loads) into DIR, for
    /// generating bindings in any language (e.g. `componentize-py -d DIR/v0.1.0 ... bindings`).
    Wit {
        /// Where to write `v0.1.0/*.wit`, `v0.2.0/*.wit` (created when missing).
        dir: PathBuf,
    },
    /// Run a sampler or a redactor over recorded traces and print, per trace, the decision and reason
    /// or the edits, and the cost of each call. Exits 1 when a call traps, times out, runs out of memory
    /// or breaks the contract.
    Test {
        /// The `.wasm` component, or `builtin:NAME`.
        plugin: PathBuf,
        /// The traces: a `--record` file, OTLP/JSON lines (`.json`/`.jsonl`, e.g. the file exporter's
        /// output) or length-delimited protobuf (`.pb`).
        traces: PathBuf,
        /// The plugin's configuration (what a rule's `config:` holds), as JSON text or a JSON file.
        #[arg(long, default_value = "{}", value_name = "JSON")]
        config: String,
        /// Deadline of one call, as in production (`plugins.call_timeout`).
        #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
        call_timeout: Duration,
        /// Memory cap of the instance, as in production (`plugins.memory_limit`).
        #[arg(long, default_value = "64MiB")]
        memory_limit: crate::config::ByteSize,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The text of `tailgate plugin list`: one block per built-in plugin.
pub fn builtin_plugin_list() -> String {
    use crate::plugin::builtin;
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut any = false;
    for b in builtin::all() {
        any = true;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{} ({}, version {}, {} bytes)\n  {}\n  options: {}",
            b.reference(),
            match b.world {
                crate::plugin::PluginWorld::Sampler => "sampler",
                crate::plugin::PluginWorld::Redactor => "redactor",
            },
            b.version(),
            b.bytes.len(),
            b.summary,
            b.options
        );
    }
    if !any {
        out.push_str(
            "this tailgate was built without built-in plugins (feature `builtin-plugins`)\n",
        );
    }
    out
}

/// The built-in configuration used without `--config`: keep everything (a pass-through), so a first run
/// shows traffic flowing; real policies come from a file.
pub const DEFAULT_CONFIG: &str = "policy:\n  default: keep\n";

impl Cli {
    /// The configuration file: a subcommand's `FILE` / `--config`, else the top-level `--config` (or
    /// `TAILGATE_CONFIG`).
    pub fn config_path(&self) -> Option<&Path> {
        let sub = match &self.command {
            Some(Command::Run { config })
            | Some(Command::Replay { config, .. })
            | Some(Command::Config {
                command: ConfigCommand::Print { config },
            }) => config.path.as_deref(),
            Some(Command::Validate { file, config }) => file.as_deref().or(config.path.as_deref()),
            _ => None,
        };
        sub.or(self.config.as_deref())
    }

    /// The configuration: the file (or the built-in default) with flags and environment applied.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let path = self.config_path();
        let mut cfg = match path {
            Some(path) => Config::load(path)?,
            None => Config::parse(DEFAULT_CONFIG, "built-in default")?,
        };
        cfg.apply(&self.overrides);
        cfg.validate()
            .and_then(|()| cfg.validate_record())
            .map_err(|message| ConfigError::Invalid {
                path: path.map_or("command line".into(), |p| p.display().to_string()),
                message,
            })?;
        Ok(cfg)
    }

    /// Whether the command reads tailgate's configuration at all (`plugin ...` and `config schema` do not,
    /// so a broken `TAILGATE_CONFIG` does not stop them).
    pub fn needs_config(&self) -> bool {
        !matches!(
            self.command,
            Some(Command::Plugin { .. })
                | Some(Command::Migrate { .. })
                | Some(Command::Config {
                    command: ConfigCommand::Schema
                })
        )
    }
}

/// The configuration file's JSON Schema (draft 2020-12), generated from the config types: their doc
/// comments are the descriptions, unknown keys are refused as the parser refuses them.
pub fn config_schema() -> String {
    // Defaults come from `Default` impls; sizes computed from the machine's memory are `auto` there.
    let schema = schemars::schema_for!(Config).to_value();
    // A schema is plain JSON values: serializing it cannot fail.
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// The text of `tailgate config print`.
pub fn config_yaml(cfg: &Config) -> Result<String, String> {
    serde_norway::to_string(cfg).map_err(|e| format!("cannot print the configuration: {e}"))
}

/// A plugin configuration given on the command line: JSON text, or the path of a JSON (or YAML) file.
pub fn plugin_config_arg(arg: &str) -> Result<String, String> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|e| format!("--config {arg}: {e}"))?
    } else {
        arg.to_owned()
    };
    if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
        return Ok(text);
    }
    // YAML, as a rule's `config:` is written in tailgate's file.
    let value: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| format!("--config is neither JSON nor YAML: {e}"))?;
    Ok(value.to_string())
}

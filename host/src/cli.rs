//! The command line: `tailgate [--config FILE]` runs the proxy, `tailgate validate --config FILE` checks a
//! configuration, `tailgate replay --config FILE traces.pb` runs a recording through a policy offline,
//! `tailgate plugin check FILE.wasm` inspects a plugin, `tailgate plugin list` lists the built-in ones.

use crate::config::{Config, ConfigError, Overrides};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// tailgate: a tail-sampling, PII-redacting OpenTelemetry trace proxy with WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(name = "tailgate", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (YAML). Without it tailgate runs on the built-in defaults: receive on
    /// 0.0.0.0:4317/4318, keep every trace, export OTLP/gRPC to http://localhost:4317.
    #[arg(long, short, global = true, env = "TAILGATE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub overrides: Overrides,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Check a configuration file and exit: 0 when valid, 1 with a message naming the problem.
    Validate,
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
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
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
    /// The configuration: the file (or the built-in default) with flags and environment applied.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::parse(DEFAULT_CONFIG, "built-in default")?,
        };
        cfg.apply(&self.overrides);
        cfg.validate()
            .and_then(|()| cfg.validate_record())
            .map_err(|message| ConfigError::Invalid {
                path: self
                    .config
                    .as_ref()
                    .map_or("command line".into(), |p| p.display().to_string()),
                message,
            })?;
        Ok(cfg)
    }
}

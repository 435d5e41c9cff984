//! The standard plugins built into the binary: `plugin: builtin:keep-errors` in a rule loads the
//! component `host/build.rs` compiled from `plugins/keep-errors` when this binary was built. They are
//! ordinary components (same contract, limits, stats and hot reload as a file); only their bytes come
//! from the binary instead of a path. `tailgate plugin list` prints this table.
use std::path::Path;

use super::PluginWorld;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The prefix that names a built-in plugin in a rule's `plugin:`.
pub const SCHEME: &str = "builtin:";

/// One built-in plugin.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub world: PluginWorld,
    /// What it decides or edits, one line.
    pub summary: &'static str,
    /// Its configuration keys, with defaults (`docs/plugins.md` has the details).
    pub options: &'static str,
    /// The component: built from `plugins/<name>` with this binary, so it has the binary's version.
    pub bytes: &'static [u8],
}

impl Builtin {
    /// The reference a rule uses, e.g. `builtin:keep-errors`.
    pub fn reference(&self) -> String {
        format!("{SCHEME}{}", self.name)
    }

    /// The plugin's version: the version of the tailgate it was built with.
    pub fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}

/// What each standard plugin is; the bytes come from the table `build.rs` generated.
const DESCRIPTIONS: [(&str, PluginWorld, &str, &str); 7] = [
    (
        "keep-errors",
        PluginWorld::Sampler,
        "keeps traces with an ERROR span or a matching HTTP status; else abstains",
        "status_error: bool (true), http_status: [\"5xx\", 429] ([])",
    ),
    (
        "keep-slow",
        PluginWorld::Sampler,
        "keeps traces slower than a threshold (earliest start to latest end); else abstains",
        "threshold: duration (required), per_root_name: {name: duration}, upper_threshold: duration ({})",
    ),
    (
        "probabilistic",
        PluginWorld::Sampler,
        "keeps a consistent share of traces (per key if set), decided on the trace id's randomness",
        "probability: 0..1 or percentage: 0..100 (required), otherwise: drop|abstain (drop), \
         probabilities: {key value: 0..1}, key (service.name), on: resource|span",
    ),
    (
        "attribute-match",
        PluginWorld::Sampler,
        "keeps (or drops) traces whose span or resource attributes match conditions",
        "conditions: [{key, on: span|resource, equals|in|regex|min,max|bool}], mode: any|all (any), \
         action: keep|drop (keep)",
    ),
    (
        "span-count",
        PluginWorld::Sampler,
        "keeps (or drops) traces whose span count is within a range",
        "min, max, action: keep|drop (keep)",
    ),
    (
        "rate-limit",
        PluginWorld::Sampler,
        "keeps at most N traces or spans per second per key (token bucket); stateful",
        "traces_per_second or spans_per_second (one required), burst, key (service.name), \
         on: resource|span, max_keys, otherwise: drop|abstain (drop)",
    ),
    (
        "pii",
        PluginWorld::Redactor,
        "the standard PII redactor: validated detectors, sensitive semantic-convention keys, URL and \
         SQL sanitizing",
        "see docs/plugins.md (\"The PII redactor\"); {} catches the common cases",
    ),
];

/// The plugin contract this binary speaks, as WIT files (`tailgate plugin wit DIR` writes them): what a
/// plugin author in any language generates bindings from. Paths are relative to the contract root.
pub const CONTRACT: &[(&str, &str)] = &[
    (
        "v0.1.0/types.wit",
        include_str!("../../../wit/v0.1.0/types.wit"),
    ),
    (
        "v0.1.0/host.wit",
        include_str!("../../../wit/v0.1.0/host.wit"),
    ),
    (
        "v0.1.0/sampler.wit",
        include_str!("../../../wit/v0.1.0/sampler.wit"),
    ),
    (
        "v0.1.0/redactor.wit",
        include_str!("../../../wit/v0.1.0/redactor.wit"),
    ),
    (
        "v0.2.0/types.wit",
        include_str!("../../../wit/v0.2.0/types.wit"),
    ),
    (
        "v0.2.0/host.wit",
        include_str!("../../../wit/v0.2.0/host.wit"),
    ),
    (
        "v0.2.0/sampler.wit",
        include_str!("../../../wit/v0.2.0/sampler.wit"),
    ),
];

/// Writes [`CONTRACT`] under `dir` (created when missing), overwriting files of the same name. Returns
/// the files written.
pub fn write_contract(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::with_capacity(CONTRACT.len());
    for (name, text) in CONTRACT {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// Every built-in plugin, in a stable order. Empty when the binary was built without the
/// `builtin-plugins` feature.
pub fn all() -> impl Iterator<Item = Builtin> {
    BUILT.iter().filter_map(|&(name, bytes)| {
        let (_, world, summary, options) = DESCRIPTIONS.iter().find(|d| d.0 == name)?;
        Some(Builtin {
            name,
            world: *world,
            summary,
            options,
            bytes,
        })
    })
}

/// The built-in plugin called `name`.
pub fn get(name: &str) -> Option<Builtin> {
    all().find(|b| b.name == name)
}

/// The name in a `builtin:NAME` reference, or `None` for a path.
pub fn name_of(path: &Path) -> Option<&str> {
    path.to_str()?.strip_prefix(SCHEME)
}

/// The bytes a `builtin:NAME` reference stands for, or an error naming the choices.
pub fn resolve(name: &str) -> Result<Builtin, String> {
    get(name).ok_or_else(|| {
        let names: Vec<_> = all().map(|b| b.name).collect();
        if names.is_empty() {
            format!(
                "`{SCHEME}{name}`: this tailgate was built without its built-in plugins (feature \
                 `builtin-plugins`); give the plugin as a path to a .wasm file"
            )
        } else {
            format!(
                "`{SCHEME}{name}` is not a built-in plugin; the built-in ones are: {} (`tailgate plugin \
                 list`)",
                names.join(", ")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_carries_every_wit_file_of_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk = Vec::new();
        for version in std::fs::read_dir(&root).expect("wit/") {
            let version = version.expect("entry").path();
            for file in std::fs::read_dir(&version).expect("wit/<version>") {
                let file = file.expect("entry").path();
                let rel = file.strip_prefix(&root).expect("under wit/");
                on_disk.push(rel.to_string_lossy().into_owned());
            }
        }
        on_disk.sort();
        let mut carried: Vec<String> = CONTRACT.iter().map(|(n, _)| n.to_string()).collect();
        carried.sort();
        assert_eq!(carried, on_disk, "CONTRACT must list every file under wit/");
        let dir = std::env::temp_dir().join(format!("tailgate-wit-{}", std::process::id()));
        let written = write_contract(&dir).expect("writes");
        assert_eq!(written.len(), CONTRACT.len());
        for (name, text) in CONTRACT {
            assert_eq!(
                &std::fs::read_to_string(dir.join(name)).expect("read"),
                text
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_built_plugin_is_described_and_every_description_is_built() {
        for (name, _) in BUILT {
            assert!(
                DESCRIPTIONS.iter().any(|d| d.0 == *name),
                "{name} has no description"
            );
        }
        if !BUILT.is_empty() {
            for d in DESCRIPTIONS {
                assert!(get(d.0).is_some(), "{} is described but not built", d.0);
            }
        }
    }

    #[test]
    fn references_resolve_and_unknown_names_list_the_choices() {
        assert_eq!(name_of(Path::new("builtin:pii")), Some("pii"));
        assert_eq!(name_of(Path::new("plugins/pii.wasm")), None);
        let e = resolve("keep-erors").expect_err("a misspelled name");
        assert!(e.contains("keep-erors"), "{e}");
        if !BUILT.is_empty() {
            assert!(e.contains("keep-errors") && e.contains("pii"), "{e}");
            let b = resolve("keep-errors").expect("built in");
            assert_eq!(b.reference(), "builtin:keep-errors");
            // A component starts with the wasm magic and the component-model layer.
            assert_eq!(&b.bytes[..4], b"\0asm");
        }
    }
}

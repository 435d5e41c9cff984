//! The wasmtime bindings of the `tailgate:plugin@0.1.0` and `@0.2.0` worlds: the only `bindgen!` in
//! tailgate. Every other module uses the generated types through here.
//!
//! The `types` interface of 0.2.0 is structurally identical to 0.1.0's, so the 0.2.0 bindings reuse the
//! 0.1.0 Rust types (`with`; wasmtime type-checks records and variants by their fields and cases, not their
//! names): the projection, summary and full-trace code serves both versions.

/// The `sampler` world: imports `host`, exports `sampling`.
pub mod sampler {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "tailgate:plugin/sampler@0.1.0",
        additional_derives: [PartialEq],
    });
}

/// The `redactor` world: imports `host`, exports `redaction`; shares `types` and `host` with [`sampler`].
pub mod redactor {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "tailgate:plugin/redactor@0.1.0",
        additional_derives: [PartialEq],
        with: {
            "tailgate:plugin/types@0.1.0": super::sampler::tailgate::plugin::types,
            "tailgate:plugin/host@0.1.0": super::sampler::tailgate::plugin::host,
        },
    });
}

/// The 0.2.0 `sampler` world (predicate pushdown): imports `host@0.2.0`, exports `sampling@0.2.0`.
pub mod sampler_v2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2.0",
        world: "tailgate:plugin/sampler@0.2.0",
        additional_derives: [PartialEq],
        with: {
            "tailgate:plugin/types@0.2.0": super::sampler::tailgate::plugin::types,
        },
    });
}

pub use redactor::exports::tailgate::plugin::redaction;
pub use sampler::exports::tailgate::plugin::sampling;
pub use sampler::tailgate::plugin::host;
pub use sampler::tailgate::plugin::types;
pub use sampler_v2::exports::tailgate::plugin::sampling as sampling_v2;
pub use sampler_v2::tailgate::plugin::host as host_v2;

/// The exported interface names this host version implements, used to tell worlds apart.
pub const SAMPLING_EXPORT: &str = "tailgate:plugin/sampling@0.1.0";
/// See [`SAMPLING_EXPORT`].
pub const REDACTION_EXPORT: &str = "tailgate:plugin/redaction@0.1.0";
/// The host interface plugins may import.
pub const HOST_IMPORT: &str = "tailgate:plugin/host@0.1.0";
/// The 0.2.0 sampling interface (see [`SAMPLING_EXPORT`]).
pub const SAMPLING_EXPORT_V2: &str = "tailgate:plugin/sampling@0.2.0";
/// The 0.2.0 host interface.
pub const HOST_IMPORT_V2: &str = "tailgate:plugin/host@0.2.0";

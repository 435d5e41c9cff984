//! The wasmtime bindings of the `tailgate:plugin@0.1.0` worlds: the only `bindgen!` in tailgate. Every
//! other module uses the generated types through here.

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

pub use redactor::exports::tailgate::plugin::redaction;
pub use sampler::exports::tailgate::plugin::sampling;
pub use sampler::tailgate::plugin::host;
pub use sampler::tailgate::plugin::types;

/// The exported interface names this host version implements, used to tell worlds apart.
pub const SAMPLING_EXPORT: &str = "tailgate:plugin/sampling@0.1.0";
/// See [`SAMPLING_EXPORT`].
pub const REDACTION_EXPORT: &str = "tailgate:plugin/redaction@0.1.0";
/// The host interface plugins may import.
pub const HOST_IMPORT: &str = "tailgate:plugin/host@0.1.0";

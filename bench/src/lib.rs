//! The benchmark harness's shared parts: the realistic workload generator (used by the `tailgate-bench`
//! binary and the criterion benches).

pub mod workload;

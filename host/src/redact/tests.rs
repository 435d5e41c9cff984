//! Tests of edit application, the strict scrub and the fail-closed paths.

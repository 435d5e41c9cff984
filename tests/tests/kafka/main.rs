//! Kafka scale-out end to end (feature `kafka`): tailgate replicas in one consumer group behind a
//! librdkafka mock cluster (crash failover with `kill -9`) and, when `TAILGATE_TANSU` names a tansu
//! binary (scripts/test.sh installs one), a real broker (the ingest tier with the Python SDK, two replicas
//! splitting the partitions, a graceful stop, the group-wide rate limit).

mod crash_failover;
mod group_budget;
mod manifests;
mod tansu;

//! Kafka scale-out end to end (feature `kafka`), against Apache Kafka brokers started by the tests from
//! the jars `scripts/peers.sh kafka` fetches (`TAILGATE_KAFKA_LIBS`; the tests fail without it unless
//! `TAILGATE_SKIP_KAFKA=1`): the ingest tier with the Python SDK and a graceful stop, a replica killed
//! with SIGKILL, the partition leader broker killed under load, a rebalance over a pre-published backlog,
//! the group-wide rate limit, and Jaeger v2 behind Kafka (`TAILGATE_JAEGER`); on librdkafka's mock
//! cluster, refused offset commits; plus the Kubernetes manifests' configurations.

mod backlog_rebalance;
mod broker_failover;
mod commit_refusals;
mod crash_failover;
mod group_budget;
mod ingest_tier;
mod jaeger;
mod manifests;

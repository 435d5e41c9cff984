//! The Kafka source: one member of a consumer group reading OTLP `ExportTraceServiceRequest` messages
//! (`otlp_proto`) from the topic and handing them to the buffer through the ingest queue, each message
//! with an [`Ack`] that marks its offset decided. Offsets are committed every `commit_interval` up to the
//! oldest undecided message ([`PartitionProgress`]).
//!
//! The consumer runs on a thread of its own (librdkafka calls the rebalance callback on the thread that
//! polls, and the hand-off blocks there until the revoked partitions' traces are decided):
//! - partitions revoked (graceful rebalance, or this replica leaving): their undecided traces are decided
//!   at once (`decide_now`, trigger `handoff`), the thread waits up to `handoff_timeout` for their acks,
//!   commits, and only then lets librdkafka complete the revocation;
//! - partitions assigned: the committed metadata of the previous owner says up to where it may have read;
//!   messages re-read below that are counted as replays;
//! - shutdown: stop reading, let go of the ingest queue so the buffer drains, wait for the acks, commit,
//!   leave the group.

use super::offsets::{PartitionProgress, parse_metadata};
use crate::config::{InitialOffset, KafkaReceiver};
use crate::ingest::{Ack, IngestHandle, SpanBatch};
use crate::metrics::{Metrics, ReceiverLabels};
use crate::otlp::predicate::PredicateSlot;
use crate::otlp::scan_export_request_with;
use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka receiver: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka receiver: cannot start the consumer thread: {0}")]
    Thread(std::io::Error),
}

/// A running source. [`KafkaSource::finish`] waits for its final commit.
pub struct KafkaSource {
    stop: Arc<Stop>,
    done: tokio::sync::oneshot::Receiver<()>,
}

/// The shutdown request the consumer thread polls for, with the app's shutdown deadline.
#[derive(Default)]
struct Stop {
    requested: AtomicBool,
    /// Until when the thread waits for what it handed over to be decided.
    deadline: Mutex<Option<Instant>>,
}

impl Stop {
    /// `wait_until`, or the shutdown deadline if that comes first.
    fn bound(&self, wait_until: Instant) -> Instant {
        lock(&self.deadline).map_or(wait_until, |d| d.min(wait_until))
    }
}

impl KafkaSource {
    /// Asks the consumer thread to stop reading; it then waits for what it handed over to be decided
    /// (until `deadline`, the app's one shutdown deadline), commits, and leaves the group.
    pub fn stop_by(&self, deadline: Instant) {
        *lock(&self.stop.deadline) = Some(deadline);
        self.stop.requested.store(true, Ordering::Relaxed);
    }

    /// Waits until the thread has committed and left the group (call [`KafkaSource::stop_by`] first).
    pub async fn finish(self) {
        let _ = self.done.await;
    }
}

/// Assignment state shared by the consumer thread and the acks (which fire on pipeline threads).
#[derive(Default)]
struct State {
    partitions: HashMap<i32, PartitionProgress>,
    /// Partitions assigned whose previous owner's metadata is still to be fetched.
    to_fetch: Vec<i32>,
    generations: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever an ack completes.
    changed: Condvar,
    /// Taken at shutdown so the buffer can drain.
    ingest: Mutex<Option<IngestHandle>>,
    /// What messages are scanned with (the policy's predicates; outlives the ingest handle at shutdown).
    predicates: PredicateSlot,
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    topic: String,
    handoff_timeout: Duration,
    /// Set at shutdown; no hand-off waits past its deadline.
    stop: Arc<Stop>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn acked(&self, partition: i32, generation: u64, offset: i64) {
        let mut st = lock(&self.state);
        if let Some(p) = st.partitions.get_mut(&partition)
            && p.generation == generation
        {
            p.done(offset);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Waits until none of `partitions` (all when `None`) has an undecided message, or `deadline`.
    /// Returns how many partitions still have some.
    fn wait_settled(&self, partitions: Option<&[i32]>, deadline: Instant) -> usize {
        let mut st = lock(&self.state);
        loop {
            let unsettled = st
                .partitions
                .iter()
                .filter(|(p, prog)| {
                    partitions.is_none_or(|ps| ps.contains(p)) && prog.pending_count() > 0
                })
                .count();
            let now = Instant::now();
            if unsettled == 0 || now >= deadline {
                return unsettled;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The offsets to commit for `partitions` (all when `None`), with the reservation metadata, or the
    /// exact read position on a final commit.
    fn commit_list(&self, partitions: Option<&[i32]>, last: bool) -> TopicPartitionList {
        let st = lock(&self.state);
        let mut tpl = TopicPartitionList::new();
        for (p, prog) in &st.partitions {
            if partitions.is_some_and(|ps| !ps.contains(p)) {
                continue;
            }
            if let Some(offset) = prog.commit_offset() {
                let meta = if last {
                    prog.final_metadata()
                } else {
                    prog.metadata()
                };
                let mut e = tpl.add_partition(&self.topic, *p);
                if e.set_offset(Offset::Offset(offset)).is_ok() {
                    e.set_metadata(meta);
                }
            }
        }
        tpl
    }

    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
        mode: CommitMode,
    ) -> bool {
        if tpl.count() == 0 {
            return true;
        }
        let outcome = match consumer.commit(tpl, mode) {
            Ok(()) => "ok",
            Err(e) => {
                use rdkafka::types::RDKafkaErrorCode::{IllegalGeneration, RebalanceInProgress};
                // During a rebalance the group refuses commits; the next one (or the hand-off's) succeeds.
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RebalanceInProgress | IllegalGeneration)
                ) {
                    tracing::debug!(error = %e, "kafka offset commit refused during a rebalance");
                } else {
                    tracing::warn!(error = %e, "kafka offset commit failed");
                }
                "error"
            }
        };
        self.count_commit(outcome);
        outcome == "ok"
    }

    /// The stop's commit, made sure of: a refused one is retried, and so is one that an earlier
    /// asynchronous commit overtook (librdkafka retries a periodic commit refused with
    /// `COORDINATOR_LOAD_IN_PROGRESS` itself, and that retry can reach the coordinator after this
    /// commit, moving the group's offset back: the next owner would re-read what was decided). Checked
    /// by reading the group's committed offsets back; a few tries, a tenth of a second apart.
    fn commit_final<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        const TRIES: u32 = 5;
        for attempt in 1..=TRIES {
            if self.commit(consumer, tpl, CommitMode::Sync) && committed_at_least(consumer, tpl) {
                return;
            }
            if attempt < TRIES {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        tracing::warn!(
            "kafka: the final offset commit did not hold after {TRIES} tries; the next owner may re-read decided messages (counted as replays)"
        );
    }

    fn count_commit(&self, outcome: &'static str) {
        self.metrics
            .kafka
            .commits
            .get_or_create(&super::OutcomeLabels { outcome })
            .inc();
    }

    /// Decides the revoked partitions' traces now, waits for them, commits, and forgets the partitions.
    fn hand_off<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, revoked: &[i32]) {
        let traces: Vec<_> = {
            let st = lock(&self.state);
            revoked
                .iter()
                .filter_map(|p| st.partitions.get(p))
                .flat_map(PartitionProgress::pending_traces)
                .collect()
        };
        let ingest = lock(&self.ingest).clone();
        if !traces.is_empty()
            && let Some(ingest) = ingest
        {
            let n = traces.len();
            let batch = SpanBatch {
                decide_now: traces,
                ..Default::default()
            };
            if self.runtime.block_on(ingest.submit(batch)).is_err() {
                tracing::debug!("kafka hand-off: tailgate is stopping; buffer drains on its own");
            }
            tracing::info!(partitions = ?revoked, traces = n, "kafka partitions revoked: deciding their traces now");
        }
        let deadline = self.stop.bound(Instant::now() + self.handoff_timeout);
        let unsettled = self.wait_settled(Some(revoked), deadline);
        if unsettled > 0 {
            self.metrics.kafka.handoff_timeouts.inc_by(unsettled as u64);
            tracing::warn!(
                partitions = unsettled,
                "kafka hand-off: traces still undecided after handoff_timeout; the next owner re-reads them"
            );
        }
        let tpl = self.commit_list(Some(revoked), true);
        self.commit(consumer, &tpl, CommitMode::Sync);
        let mut st = lock(&self.state);
        for p in revoked {
            st.partitions.remove(p);
        }
        st.to_fetch.retain(|p| !revoked.contains(p));
        self.metrics
            .kafka
            .partitions_assigned
            .set(st.partitions.len() as i64);
    }

    fn assigned(&self, assigned: &[i32]) {
        let mut st = lock(&self.state);
        for p in assigned {
            st.generations += 1;
            let g = st.generations;
            st.partitions.insert(*p, PartitionProgress::new(g, 0));
            st.to_fetch.push(*p);
        }
        self.metrics
            .kafka
            .partitions_assigned
            .set(st.partitions.len() as i64);
        tracing::info!(partitions = ?assigned, "kafka partitions assigned");
    }

    /// Reads the previous owners' reservations of newly assigned partitions from the committed metadata.
    fn fetch_reservations<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let partitions = std::mem::take(&mut lock(&self.state).to_fetch);
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&self.topic, *p);
        }
        match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(committed) => {
                let mut st = lock(&self.state);
                for e in committed.elements_for_topic(&self.topic) {
                    let reserved = parse_metadata(e.metadata());
                    if let (Some(r), Some(prog)) = (reserved, st.partitions.get_mut(&e.partition()))
                    {
                        prog.set_replay_below(r);
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                "kafka: cannot read committed offsets; replays after this takeover are not counted"
            ),
        }
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

/// The consumer context: rebalance callbacks and librdkafka's errors.
struct SourceContext {
    shared: Arc<Shared>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka receiver: client error");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.count_rebalance("revoke");
            let revoked = self.shared.partitions_of(tpl);
            self.shared.hand_off(consumer, &revoked);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.count_rebalance("assign");
                self.shared.assigned(&self.shared.partitions_of(tpl));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        // An async commit that the broker refused (it was counted as `ok` when it was sent).
        if let Err(e) = &result {
            tracing::debug!(error = %e, "kafka async commit failed");
            self.shared.count_commit("async_error");
        }
    }
}

impl SourceContext {
    fn count_rebalance(&self, kind: &'static str) {
        self.shared
            .metrics
            .kafka
            .rebalances
            .get_or_create(&super::RebalanceLabels { kind })
            .inc();
    }
}

/// The librdkafka consumer configuration for `cfg`.
pub fn consumer_config(cfg: &KafkaReceiver) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.join(","))
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match cfg.initial_offset {
                InitialOffset::Earliest => "earliest",
                InitialOffset::Latest => "latest",
            },
        )
        // Only partitions that move are revoked (and their traces handed off) on a rebalance.
        .set("partition.assignment.strategy", "cooperative-sticky");
    for (k, v) in &cfg.client_options {
        c.set(k, v);
    }
    c
}

/// Starts the consumer thread. Must be called inside the tokio runtime (acks and submits use it).
pub fn start(
    cfg: &KafkaReceiver,
    ingest: IngestHandle,
    metrics: Arc<Metrics>,
) -> Result<KafkaSource, SourceError> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        predicates: ingest.predicate_slot(),
        ingest: Mutex::new(Some(ingest)),
        runtime: tokio::runtime::Handle::current(),
        metrics,
        topic: cfg.topic.clone(),
        handoff_timeout: cfg.handoff_timeout,
        stop: Arc::new(Stop::default()),
    });
    let consumer: BaseConsumer<SourceContext> =
        consumer_config(cfg).create_with_context(SourceContext {
            shared: shared.clone(),
        })?;
    consumer.subscribe(&[cfg.topic.as_str()])?;
    let stop = shared.stop.clone();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let commit_interval = cfg.commit_interval;
    std::thread::Builder::new()
        .name("tailgate-kafka".into())
        .spawn(move || {
            run(&consumer, &shared, commit_interval);
            drop(consumer); // leaves the group (the revoke callback commits what is left)
            let _ = done_tx.send(());
        })
        .map_err(SourceError::Thread)?;
    tracing::info!(topic = %cfg.topic, group = %cfg.group_id, brokers = ?cfg.brokers, "kafka receiver started");
    Ok(KafkaSource { stop, done })
}

fn run(consumer: &BaseConsumer<SourceContext>, shared: &Arc<Shared>, commit_interval: Duration) {
    let stop = &shared.stop;
    let mut last_commit = Instant::now();
    let mut errors_logged = Instant::now() - Duration::from_secs(60);
    while !stop.requested.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(100));
        shared.fetch_reservations(consumer);
        match polled {
            None => {}
            Some(Err(e)) => {
                if errors_logged.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, "kafka receiver: consume error (further ones for 10 s at debug)");
                    errors_logged = Instant::now();
                } else {
                    tracing::debug!(error = %e, "kafka receiver: consume error");
                }
            }
            Some(Ok(msg)) => {
                let (partition, offset) = (msg.partition(), msg.offset());
                let payload = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
                drop(msg);
                if !handle(consumer, shared, partition, offset, payload) {
                    break;
                }
            }
        }
        if last_commit.elapsed() >= commit_interval {
            let tpl = shared.commit_list(None, false);
            shared.commit(consumer, &tpl, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    // Let go of the ingest queue so the buffer can decide what it holds, then commit what got decided.
    lock(&shared.ingest).take();
    // Until the app's shutdown deadline (the handoff timeout if the loop ended some other way).
    let deadline =
        (*lock(&stop.deadline)).unwrap_or_else(|| Instant::now() + shared.handoff_timeout);
    let unsettled = shared.wait_settled(None, deadline);
    if unsettled > 0 {
        tracing::warn!(
            partitions = unsettled,
            "kafka receiver stopping with undecided messages; the next owner re-reads them"
        );
    }
    let tpl = shared.commit_list(None, true);
    shared.commit_final(consumer, &tpl);
    tracing::info!("kafka receiver stopped");
}

/// Whether the group's committed offsets are at least those of `tpl` for every partition in it.
fn committed_at_least<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tpl: &TopicPartitionList,
) -> bool {
    let Ok(committed) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(2)) else {
        return false;
    };
    tpl.elements().iter().all(|want| {
        let Offset::Offset(want_at) = want.offset() else {
            return true;
        };
        committed
            .find_partition(want.topic(), want.partition())
            .is_some_and(|got| matches!(got.offset(), Offset::Offset(at) if at >= want_at))
    })
}

/// Hands one message to the buffer. Returns false when tailgate is stopping.
fn handle(
    consumer: &BaseConsumer<SourceContext>,
    shared: &Arc<Shared>,
    partition: i32,
    offset: i64,
    payload: Bytes,
) -> bool {
    let metrics = &shared.metrics;
    metrics.kafka.messages_consumed.inc();
    // Reserve the read position first, so a crash after this read is still counted by the next owner.
    let reservation = {
        let mut st = lock(&shared.state);
        let Some(prog) = st.partitions.get_mut(&partition) else {
            // A message fetched before its partition was revoked: its new owner reads it. Processing it
            // here would duplicate it, and committing it could move the new owner's offset.
            tracing::debug!(
                partition,
                offset,
                "kafka message of a revoked partition; left to its new owner"
            );
            return true;
        };
        prog.needs_reservation(offset).then(|| {
            let commit_at = prog.reserve(offset);
            (commit_at, prog.metadata())
        })
    };
    if let Some((commit_at, meta)) = reservation {
        let mut tpl = TopicPartitionList::new();
        let mut e = tpl.add_partition(&shared.topic, partition);
        if e.set_offset(Offset::Offset(commit_at)).is_ok() {
            e.set_metadata(meta);
        }
        shared.commit(consumer, &tpl, CommitMode::Sync);
    }
    let scanned = match scan_export_request_with(&payload, &shared.predicates.load()) {
        Ok(s) => s,
        Err(e) => {
            metrics.kafka.messages_invalid.inc();
            tracing::debug!(partition, offset, error = %e, "kafka message is not an OTLP trace request; skipped");
            if let Some(p) = lock(&shared.state).partitions.get_mut(&partition) {
                p.skipped(offset);
            }
            return true;
        }
    };
    for (why, n) in &scanned.rejected {
        metrics.refused(super::RECEIVER, why.as_str(), *n);
    }
    let spans = scanned.spans.len() as u64;
    if spans == 0 {
        if let Some(p) = lock(&shared.state).partitions.get_mut(&partition) {
            p.skipped(offset);
        }
        return true;
    }
    let batch = SpanBatch::from_scanned(scanned);
    let generation = {
        let mut st = lock(&shared.state);
        let Some(prog) = st.partitions.get_mut(&partition) else {
            return true;
        };
        if prog.is_replay(offset) {
            metrics.kafka.replayed_messages.inc();
            metrics.kafka.replayed_spans.inc_by(spans);
        }
        prog.read(offset, batch.traces.iter().map(|(t, _)| *t).collect());
        prog.generation
    };
    let acker = shared.clone();
    let batch = batch.with_ack(Ack::on_done(move || {
        acker.acked(partition, generation, offset)
    }));
    let Some(ingest) = lock(&shared.ingest).clone() else {
        return false;
    };
    match shared.runtime.block_on(ingest.submit(batch)) {
        Ok(()) => {
            metrics
                .spans_received
                .get_or_create(&ReceiverLabels {
                    receiver: super::RECEIVER,
                })
                .inc_by(spans);
            true
        }
        Err(_) => {
            // Stopping: the dropped batch fired its ack, but its spans were never decided. Keep the
            // offset uncommitted so the next owner reads it.
            if let Some(p) = lock(&shared.state).partitions.get_mut(&partition) {
                p.hold(offset);
            }
            false
        }
    }
}

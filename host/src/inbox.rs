//! What the trace buffer hands to the pipeline: due traces ([`DueTrace`], with the [`Trigger`] that made
//! them due) and the late spans of traces already handed on ([`LateSpans`]), through a [`TraceInbox`].
//!
//! The buffer (upstream) and the pipeline (downstream) both import this module and neither imports the
//! other: the buffer sends to whatever inbox it is given (the pipeline's [`crate::pipeline::Inbox`] in
//! the process, a plain channel in tests), and the pipeline decides what to do with each item (decide
//! it on the sending thread, route it to a worker).

use crate::ingest::{Ack, Charge};
use crate::otlp::{SpanRecord, TraceId};
use std::future::Future;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why a trace became due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trigger {
    Settle,
    Idle,
    MaxWait,
    Size,
    Pressure,
    Shutdown,
    /// The trace's Kafka partition is being handed to another replica.
    Handoff,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Settle => "settle",
            Trigger::Idle => "idle",
            Trigger::MaxWait => "max_wait",
            Trigger::Size => "size",
            Trigger::Pressure => "pressure",
            Trigger::Shutdown => "shutdown",
            Trigger::Handoff => "handoff",
        }
    }
}

/// A complete trace, due for its decision.
#[derive(Debug)]
pub struct DueTrace {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRecord>,
    /// Acks of the batches these spans came in; dropped once the spans are decided and handed on.
    pub acks: Vec<Ack>,
    pub trigger: Trigger,
    pub first_seen: Instant,
    /// When it became due (for the decision latency metric): its deadline for the time triggers (settle,
    /// idle, max wait), so that a late timer counts as latency; the moment it was taken otherwise.
    pub due_at: Instant,
    /// Its bytes, counted against the buffer bound until the trace is dropped or in the export queue.
    pub charge: Charge,
}

/// Spans of a trace that was already handed to the pipeline.
#[derive(Debug)]
pub struct LateSpans {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRecord>,
    pub acks: Vec<Ack>,
    /// As [`DueTrace::charge`].
    pub charge: Charge,
}

/// What the buffer hands to the pipeline.
#[derive(Debug)]
pub enum BufferOutput {
    /// A trace to decide.
    Due(DueTrace),
    Late(LateSpans),
}

impl BufferOutput {
    pub fn trace_id(&self) -> TraceId {
        match self {
            BufferOutput::Due(t) => t.trace_id,
            BufferOutput::Late(l) => l.trace_id,
        }
    }

    /// Counts the bytes carried against `pressure` until the spans leave the pipeline.
    pub fn charge_to(&mut self, pressure: &std::sync::Arc<crate::ingest::Pressure>) {
        let (spans, charge) = match self {
            BufferOutput::Due(t) => (&t.spans, &mut t.charge),
            BufferOutput::Late(l) => (&l.spans, &mut l.charge),
        };
        *charge = pressure.charge(spans.iter().map(SpanRecord::charged_bytes).sum());
    }

    /// Spans carried.
    pub fn span_count(&self) -> usize {
        match self {
            BufferOutput::Due(t) => t.spans.len(),
            BufferOutput::Late(l) => l.spans.len(),
        }
    }
}

/// Where the buffer sends its output. `send` waits while the receiving side is full (backpressure) and
/// returns false once it is gone.
pub trait TraceInbox: Send + Sync {
    fn send(&self, o: BufferOutput) -> impl Future<Output = bool> + Send;
}

/// A plain channel is an inbox (tests read what the buffer hands on from it).
impl TraceInbox for mpsc::Sender<BufferOutput> {
    async fn send(&self, o: BufferOutput) -> bool {
        mpsc::Sender::send(self, o).await.is_ok()
    }
}

//! The batcher: accumulates kept spans into one encoded request until it holds `send_batch_size` spans
//! or `timeout` has passed since its first span, never more than `send_batch_max_size`, then hands it to
//! one of `num_consumers` concurrent senders. A batch is also closed before its encoded size would pass
//! `send_batch_max_bytes`.

use super::spool::{AppendError, Spool};
use super::{Batch, BatchSender, KeptSpans, Outcome};
use crate::config::{BatchConfig, ExportProtocol, WhenFull};
use crate::otlp::ExportBuilder;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Owns the batch being built and the sender tasks.
pub(super) struct Batcher {
    send_batch_size: usize,
    send_batch_max_size: usize,
    send_batch_max_bytes: usize,
    timeout: std::time::Duration,
    rx: mpsc::Receiver<KeptSpans>,
    sender: Arc<BatchSender>,
    /// One permit per concurrent export request (`sending_queue.num_consumers`).
    consumers: Arc<Semaphore>,
    tasks: JoinSet<()>,
    builder: ExportBuilder,
    /// The export queue's byte cost of the spans in `builder`.
    building_bytes: usize,
    /// When the batch being built must be sent; `None` while it is empty.
    deadline: Option<Instant>,
    /// The persistent queue, when configured: batches go there instead of straight to a sender.
    spool: Option<Arc<Spool>>,
}

impl Batcher {
    pub fn new(
        cfg: &BatchConfig,
        protocol: ExportProtocol,
        num_consumers: usize,
        rx: mpsc::Receiver<KeptSpans>,
        sender: Arc<BatchSender>,
        spool: Option<Arc<Spool>>,
    ) -> Self {
        let send_batch_size = cfg.send_batch_size.max(1);
        Batcher {
            send_batch_size,
            send_batch_max_size: cfg.send_batch_max_size.max(send_batch_size),
            send_batch_max_bytes: cfg.max_bytes(protocol).as_usize().max(1),
            timeout: cfg.timeout,
            rx,
            sender,
            consumers: Arc::new(Semaphore::new(num_consumers.max(1))),
            tasks: JoinSet::new(),
            builder: ExportBuilder::new(),
            building_bytes: 0,
            deadline: None,
            spool,
        }
    }

    /// The semaphore of concurrent export requests (shared with the persistent queue's dispatcher).
    pub fn consumers(&self) -> Arc<Semaphore> {
        self.consumers.clone()
    }

    /// Runs until every handle is dropped and everything is delivered, or until shutdown is cancelled
    /// (then everything still held is settled as lost to shutdown).
    pub async fn run(mut self) {
        let cancel = self.sender.cancel.clone();
        loop {
            let deadline = self.deadline;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    if self.spool.is_some() {
                        self.spool_rest().await;
                    } else {
                        self.abandon();
                    }
                    break;
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.flush().await,
                item = self.rx.recv() => match item {
                    Some(kept) => self.add(kept).await,
                    None => {
                        self.flush().await;
                        break;
                    }
                },
            }
            // Reap finished senders so the set does not grow.
            while self.tasks.try_join_next().is_some() {}
        }
        // Senders watch the cancel token themselves, so this ends by the shutdown deadline at the latest.
        while let Some(res) = self.tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "export sender task failed");
            }
        }
    }

    async fn add(&mut self, kept: KeptSpans) {
        for (i, span) in kept.spans.iter().enumerate() {
            let patch = kept.patch_of(i);
            // What `ExportBuilder::approx_encoded_len` will add for this span.
            let span_len = super::span_cost(span, patch);
            if self.builder.span_count() >= self.send_batch_max_size
                || (!self.builder.is_empty()
                    && self.builder.approx_encoded_len() + span_len > self.send_batch_max_bytes)
            {
                self.flush().await;
            }
            self.builder.push(span, patch.clone());
            self.building_bytes += self.sender.queue.cost(span, patch);
        }
        if self.builder.span_count() >= self.send_batch_size {
            self.flush().await;
        } else if !self.builder.is_empty() && self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.timeout);
        }
    }

    /// Hands the batch being built to a sender, waiting for a free one.
    async fn flush(&mut self) {
        self.deadline = None;
        if self.builder.is_empty() {
            return;
        }
        let builder = std::mem::take(&mut self.builder);
        let mut batch = Batch {
            spans: builder.span_count(),
            bytes: std::mem::take(&mut self.building_bytes),
            body: builder.finish(),
        };
        if let Some(spool) = self.spool.clone() {
            match self.to_spool(spool, batch).await {
                None => return,
                // Could not be written: send it from memory.
                Some(b) => batch = b,
            }
        }
        self.send_now(batch).await;
    }

    /// Writes a batch to the persistent queue. `None` when it is settled there (queued on disk, or
    /// dropped and counted because the queue is full); the batch back when it must be sent from memory.
    async fn to_spool(&self, spool: Arc<Spool>, batch: Batch) -> Option<Batch> {
        let spans = u32::try_from(batch.spans).ok()?;
        match spool
            .append_async(batch.body.clone(), spans, &self.sender.cancel)
            .await
        {
            Ok(()) => {
                // On disk now: the memory queue's permits go back.
                self.sender.queue.release(batch.spans, batch.bytes);
                None
            }
            Err(AppendError::Full) => {
                let reason = if spool.when_full == WhenFull::Drop {
                    "persistent_queue_full"
                } else {
                    "shutdown"
                };
                self.sender.queue.release(batch.spans, batch.bytes);
                self.sender.metrics.lost(reason, batch.spans as u64);
                None
            }
            Err(AppendError::TooLarge) => {
                tracing::warn!(
                    spans = batch.spans,
                    bytes = batch.body.len(),
                    "batch larger than the persistent queue; sending it from memory"
                );
                Some(batch)
            }
            Err(AppendError::Io(e)) => {
                tracing::error!(error = %e, "cannot write to the persistent queue; sending the batch from memory");
                Some(batch)
            }
        }
    }

    /// Hands a batch to a sender, waiting for a free one.
    async fn send_now(&mut self, batch: Batch) {
        let permit = tokio::select! {
            biased;
            _ = self.sender.cancel.cancelled() => None,
            p = self.consumers.clone().acquire_owned() => p.ok(),
        };
        let Some(permit) = permit else {
            self.sender
                .settle(batch.spans, batch.bytes, Outcome::Shutdown);
            return;
        };
        let sender = self.sender.clone();
        self.tasks.spawn(async move {
            sender.deliver(batch).await;
            drop(permit);
        });
    }

    /// Shutdown deadline passed, with the persistent queue on: the batch being built and everything still
    /// queued are written to disk (no waiting for room: a full queue counts them lost to `shutdown`), so
    /// the next start sends them. Nothing here waits on the downstream; the channel holds at most
    /// `queue_size` spans, so this is a bounded amount of local work.
    async fn spool_rest(&mut self) {
        self.rx.close();
        while let Ok(kept) = self.rx.try_recv() {
            self.add(kept).await;
        }
        self.flush().await;
    }

    /// Shutdown deadline passed: settles the batch being built and everything still queued as lost.
    fn abandon(&mut self) {
        let building = std::mem::take(&mut self.builder).span_count();
        let mut bytes = std::mem::take(&mut self.building_bytes);
        self.rx.close();
        let mut queued = 0;
        while let Ok(kept) = self.rx.try_recv() {
            queued += kept.spans.len();
            bytes += self.sender.queue.cost_of(&kept);
        }
        if building + queued > 0 {
            self.sender
                .settle(building + queued, bytes, Outcome::Shutdown);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

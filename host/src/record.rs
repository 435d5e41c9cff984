//! Recording received traffic for `tailgate replay`: every batch accepted into the buffer (from any
//! source) is written to a file on a dedicated thread, up to a byte bound, after which recording stops
//! with a log line. The proxy never waits for the disk: a full recording queue skips the batch (counted
//! and logged), and the spans themselves are processed as usual either way.
//!
//! # Format
//!
//! Chosen by the file's extension:
//! - `.json` / `.jsonl`: OTLP/JSON, one `ExportTraceServiceRequest` per line (the OpenTelemetry Collector
//!   file exporter's format, and what `--exporter-protocol file` writes);
//! - anything else (`.pb`): length-delimited protobuf, each `ExportTraceServiceRequest` preceded by its
//!   length as a protobuf varint (what `prost`'s `encode_length_delimited` writes, and Java's
//!   `writeDelimitedTo`).
//!
//! One request per accepted batch; ids, resources and scopes are kept as received.
//!
//! Not redacted: the file holds what the services sent, personal data included (replay decides and
//! redacts it as the proxy would). So a recording starts only when the configuration says so by name
//! (`record.unredacted` / `--record-unredacted`, [`crate::config::Config::validate_record`]).

use crate::otlp::{ExportBuilder, SpanRecord, TraceId};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Batches waiting for the writer thread; past this, batches are not recorded (counted).
const QUEUE_BATCHES: usize = 1024;

/// How recorded traffic is stored (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// Length-delimited `ExportTraceServiceRequest` protobuf.
    Protobuf,
    /// OTLP/JSON lines.
    Json,
}

impl RecordFormat {
    /// `.json` and `.jsonl` are JSON lines; everything else is length-delimited protobuf.
    pub fn for_path(path: &Path) -> RecordFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("jsonl") => {
                RecordFormat::Json
            }
            _ => RecordFormat::Protobuf,
        }
    }

    /// One encoded `ExportTraceServiceRequest` as a record of this format.
    pub fn frame(self, request: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            RecordFormat::Protobuf => {
                let mut out = Vec::with_capacity(request.len() + 10);
                prost::encode_length_delimiter(request.len(), &mut out)
                    .map_err(|e| e.to_string())?;
                out.extend_from_slice(request);
                Ok(out)
            }
            RecordFormat::Json => {
                let req = ExportTraceServiceRequest::decode(request).map_err(|e| e.to_string())?;
                let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
                line.push(b'\n');
                Ok(line)
            }
        }
    }
}

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create the recording {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the recording thread: {0}")]
    Thread(std::io::Error),
}

/// An accepted batch's spans, by trace.
pub type Traces = Vec<(TraceId, Vec<SpanRecord>)>;

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("written", &self.written())
            .field("skipped", &self.skipped())
            .finish()
    }
}

/// The recording: cheap to share; [`Recorder::record`] never blocks on the disk.
pub struct Recorder {
    tx: Mutex<Option<SyncSender<Traces>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set by the writer when the byte bound is reached.
    full: Arc<AtomicBool>,
    /// Batches not recorded because the queue was full.
    skipped: AtomicU64,
    /// Bytes written so far.
    written: Arc<AtomicU64>,
}

impl Recorder {
    /// Creates (truncates) `path` and starts the writer thread; at most `max_bytes` are written.
    pub fn start(path: &Path, max_bytes: u64) -> Result<Arc<Recorder>, RecordError> {
        let file = std::fs::File::create(path).map_err(|source| RecordError::Create {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let full = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            out: BufWriter::new(file),
            path: path.to_owned(),
            format: RecordFormat::for_path(path),
            max_bytes,
            full: full.clone(),
            written: written.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tailgate-record".into())
            .spawn(move || writer.run(rx))
            .map_err(RecordError::Thread)?;
        tracing::info!(path = %path.display(), max_bytes, "recording received traffic");
        Ok(Arc::new(Recorder {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            full,
            skipped: AtomicU64::new(0),
            written,
        }))
    }

    /// Records a batch that was accepted (span bytes are shared, not copied).
    pub fn record(&self, traces: Traces) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        match tx.try_send(traces) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.skipped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "the recording falls behind: batches are skipped (the proxy is not slowed down)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Batches skipped because the writer fell behind.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Bytes written to the file so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops recording: writes what is queued, flushes and closes the file. Blocking.
    pub fn finish(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the recording thread panicked");
        }
    }
}

struct Writer {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    format: RecordFormat,
    max_bytes: u64,
    full: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Traces>) {
        let mut written = 0u64;
        while let Ok(traces) = rx.recv() {
            let mut builder = ExportBuilder::new();
            for (_, spans) in &traces {
                for s in spans {
                    builder.push(s, Bytes::new());
                }
            }
            let record = match self.format.frame(&builder.finish()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a batch for the recording; skipped");
                    continue;
                }
            };
            if written + record.len() as u64 > self.max_bytes {
                self.full.store(true, Ordering::Relaxed);
                tracing::warn!(
                    path = %self.path.display(),
                    written,
                    max_bytes = self.max_bytes,
                    "the recording reached its size bound; recording stopped (the proxy goes on)"
                );
                break;
            }
            if let Err(e) = self.out.write_all(&record) {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the recording; recording stopped");
                self.full.store(true, Ordering::Relaxed);
                break;
            }
            written += record.len() as u64;
            self.written.store(written, Ordering::Relaxed);
            // Flushed per batch, so the file holds every recorded batch even if the process is killed.
            if let Err(e) = self.out.flush() {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the recording");
            }
        }
        if let Err(e) = self.out.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the recording");
        }
    }
}

//! The file sink: each batch as one line of OTLP/JSON (an `ExportTraceServiceRequest`, hex ids,
//! lowerCamelCase fields), appended to a file or written to standard output (`-`), flushed per batch.
//! This is how to see what tailgate forwards without running Jaeger.

use super::{Accepted, ExportError, Failure};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// A line-oriented OTLP/JSON writer. Write errors are not retried (a full disk or a closed pipe does not
/// heal by waiting); the batch is counted as failed.
pub(crate) struct FileSink {
    /// Shared with the blocking task that writes; `std::sync::Mutex` because it is only held there.
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl FileSink {
    /// Opens `path` for appending (created if missing), or standard output for `-`.
    pub fn open(path: &str) -> Result<Self, ExportError> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(BufWriter::new(std::io::stdout()))
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ExportError::File {
                    path: path.to_owned(),
                    source,
                })?;
            Box::new(BufWriter::new(file))
        };
        Ok(FileSink {
            out: Arc::new(Mutex::new(out)),
        })
    }

    pub async fn send(&self, body: Bytes) -> Result<Accepted, Failure> {
        let out = self.out.clone();
        let fail = |reason: &'static str, message: String| Failure {
            reason,
            retryable: false,
            retry_after: None,
            message,
        };
        tokio::task::spawn_blocking(move || {
            let req = ExportTraceServiceRequest::decode(body)
                .map_err(|e| fail("encode", e.to_string()))?;
            let mut line = serde_json::to_vec(&req).map_err(|e| fail("encode", e.to_string()))?;
            line.push(b'\n');
            let mut w = out.lock().unwrap_or_else(PoisonError::into_inner);
            w.write_all(&line)
                .and_then(|()| w.flush())
                .map_err(|e| fail("io", e.to_string()))?;
            Ok(Accepted::default())
        })
        .await
        .map_err(|e| fail("io", format!("file writer task failed: {e}")))?
    }
}

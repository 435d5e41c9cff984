//! OTLP/gRPC with pre-encoded bodies: the load driver (sends bytes as-is) and the counting sink (scans
//! what arrives with tailgate's validating scanner, so the sink costs both systems the same little CPU).

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tailgate_bench::workload::Workload;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends `Bytes` unchanged; decodes replies with prost.
#[derive(Default)]
struct ClientCodec;

struct RawEncoder;
struct ProstDecoder<M>(std::marker::PhantomData<M>);

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl<M: Message + Default> Decoder for ProstDecoder<M> {
    type Item = M;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for ClientCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<ExportTraceServiceResponse>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(std::marker::PhantomData)
    }
}

/// Receives `Bytes`; encodes replies with prost.
#[derive(Default)]
struct ServerCodec;
struct RawDecoder;
struct ProstEncoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Encoder for ProstEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for ServerCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ProstEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> ProstEncoder {
        ProstEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Waits until `target` answers an (empty) export.
pub async fn wait_ready(target: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = async {
            let ch = tonic::transport::Endpoint::from_shared(target.to_owned())?
                .connect()
                .await?;
            let mut c = tonic::client::Grpc::new(ch);
            c.ready().await?;
            let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
            c.unary(tonic::Request::new(Bytes::new()), path, ClientCodec)
                .await?;
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Sends the workload round after round (fresh trace ids each round) with `concurrency` requests in
/// flight for `duration`, over 2 HTTP/2 connections.
pub async fn drive(
    target: &str,
    w: Arc<Workload>,
    concurrency: usize,
    duration: Duration,
    rate: Option<f64>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    // With a target rate (spans/s), request n is sent no earlier than start + n * (spans per request / rate).
    let per_request = rate.map(|r| {
        let avg = w.spans as f64 / w.bodies.len() as f64;
        Duration::from_secs_f64(avg / r)
    });
    let start = tokio::time::Instant::now();
    let mut channels = Vec::new();
    for _ in 0..2 {
        channels.push(
            tonic::transport::Endpoint::from_shared(target.to_owned())?
                .connect()
                .await?,
        );
    }
    let next = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + duration;
    let mut tasks = Vec::new();
    for k in 0..concurrency {
        let ch = channels[k % channels.len()].clone();
        let (w, next, accepted, refused) =
            (w.clone(), next.clone(), accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = tonic::client::Grpc::new(ch);
            while Instant::now() < stop_at {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if let Some(gap) = per_request {
                    tokio::time::sleep_until(start + gap.mul_f64(n as f64)).await;
                }
                let i = (n % w.bodies.len() as u64) as usize;
                let round = n / w.bodies.len() as u64;
                let body = &w.bodies[i];
                let bytes = Bytes::from(body.for_round(round));
                if c.ready().await.is_err() {
                    refused.fetch_add(body.spans as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                match c.unary(tonic::Request::new(bytes), path, ClientCodec).await {
                    Ok(r) => {
                        let rejected = r
                            .get_ref()
                            .partial_success
                            .as_ref()
                            .map_or(0, |p| p.rejected_spans);
                        accepted.fetch_add(body.spans as u64 - rejected as u64, Ordering::Relaxed);
                        refused.fetch_add(rejected as u64, Ordering::Relaxed);
                    }
                    Err(s) => {
                        refused.fetch_add(body.spans as u64, Ordering::Relaxed);
                        if matches!(s.code(), Code::ResourceExhausted | Code::Unavailable) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Sends every request of one round of `w` once (round `round`), `concurrency` at a time, retrying a
/// refused request after 50 ms (up to 100 times), and returns the spans accepted.
pub async fn send_round(
    target: &str,
    w: Arc<Workload>,
    round: u64,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let ch = tonic::transport::Endpoint::from_shared(target.to_owned())?
        .connect()
        .await?;
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ch, w, next, accepted) = (ch.clone(), w.clone(), next.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = tonic::client::Grpc::new(ch);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = w.bodies.get(i) else {
                    return anyhow::Ok(());
                };
                let bytes = Bytes::from(body.for_round(round));
                let mut tries = 0;
                loop {
                    c.ready().await?;
                    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                    match c
                        .unary(tonic::Request::new(bytes.clone()), path, ClientCodec)
                        .await
                    {
                        Ok(r) => {
                            let rejected = r
                                .get_ref()
                                .partial_success
                                .as_ref()
                                .map_or(0, |p| p.rejected_spans);
                            accepted
                                .fetch_add(body.spans as u64 - rejected as u64, Ordering::Relaxed);
                            break;
                        }
                        Err(s) if tries < 100 => {
                            tries += 1;
                            if tries == 1 {
                                eprintln!("  request refused ({}), retrying", s.code());
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(s) => anyhow::bail!("request refused 100 times: {s}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(accepted.load(Ordering::Relaxed))
}

/// Sends one encoded request and fails unless it is accepted.
pub async fn send_one(target: &str, body: Bytes) -> anyhow::Result<()> {
    let ch = tonic::transport::Endpoint::from_shared(target.to_owned())?
        .connect()
        .await?;
    let mut c = tonic::client::Grpc::new(ch);
    c.ready().await?;
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    c.unary(tonic::Request::new(body), path, ClientCodec)
        .await?;
    Ok(())
}

/// The counting sink.
pub struct Sink {
    pub addr: SocketAddr,
    spans: Arc<AtomicU64>,
    recorded: Option<Arc<Mutex<Vec<Bytes>>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        Self::start_with(false).await
    }

    /// A sink that also keeps every request body it receives (the `leaks` measurement).
    pub async fn start_recording() -> anyhow::Result<Sink> {
        Self::start_with(true).await
    }

    async fn start_with(record: bool) -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(AtomicU64::new(0));
        let recorded = record.then(|| Arc::new(Mutex::new(Vec::new())));
        let svc = SinkService {
            spans: spans.clone(),
            recorded: recorded.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        Ok(Sink {
            addr,
            spans,
            recorded,
            _task: task,
        })
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// The request bodies received so far (empty unless started with [`Sink::start_recording`]).
    pub fn recorded(&self) -> Vec<Bytes> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Waits until no span arrived for `quiet` (at most `max`), returns the count.
    pub async fn wait_quiet(&self, quiet: Duration, max: Duration) -> u64 {
        let end = Instant::now() + max;
        let mut last = self.spans.load(Ordering::Relaxed);
        let mut since = Instant::now();
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.spans.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }
}

#[derive(Clone)]
struct SinkService {
    spans: Arc<AtomicU64>,
    recorded: Option<Arc<Mutex<Vec<Bytes>>>>,
}

impl tonic::server::NamedService for SinkService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<tonic::body::Body>> for SinkService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let spans = self.spans.clone();
        let recorded = self.recorded.clone();
        Box::pin(async move {
            let handler = tower::service_fn(move |r: tonic::Request<Bytes>| {
                let spans = spans.clone();
                let recorded = recorded.clone();
                async move {
                    if let Some(rec) = &recorded {
                        rec.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(r.get_ref().clone());
                    }
                    let n = tailgate::otlp::scan_export_request(r.get_ref())
                        .map_err(|e| Status::invalid_argument(e.to_string()))?
                        .spans
                        .len();
                    spans.fetch_add(n as u64, Ordering::Relaxed);
                    Ok::<_, Status>(tonic::Response::new(ExportTraceServiceResponse::default()))
                }
            });
            let mut grpc = tonic::server::Grpc::new(ServerCodec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(256 << 20);
            Ok(grpc.unary(handler, req).await)
        })
    }
}

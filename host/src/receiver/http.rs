//! OTLP/HTTP receiver.

use super::ReceiverContext;
use tokio::net::TcpListener;

/// Serves OTLP/HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: ReceiverContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (listener, ctx);
    shutdown.await;
    Ok(())
}

//! The HTTP/1.1 server loop: each accepted connection gets a slot under the connection cap
//! (`connections.rs`), a deadline for its request headers (which is also how long a
//! keep-alive connection may sit idle), and the peer address its requests carry; on shutdown
//! every connection is told to finish.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::connections::{Connections, Slot};

/// The limits of the server loop.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// How long a client may take to send a request's headers, counted from when the
    /// connection opens or its previous response was sent.
    pub header_timeout: Duration,
}

/// Accepts connections until the connections are told to stop.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<Connections>,
    limits: ServeLimits,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = connections.stopping() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, mostly: wait for some to be given back.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.open() else {
            // Every connection is busy: this one is closed at once rather than left waiting.
            metrics::counter!("settings_api_connections_refused_total").increment(1);
            tracing::warn!(%peer, max = connections.max(), "connection refused: every connection is busy");
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, peer, slot, router.clone(), limits));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    limits: ServeLimits,
) {
    let service = {
        let slot = slot.clone();
        service_fn(move |mut request: hyper::Request<Incoming>| {
            let busy = slot.busy();
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut finishing = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                break;
            }
            // Closes once the response in flight, if any, is sent.
            () = slot.evicted(), if !finishing => {
                finishing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = slot.stopping(), if !finishing => {
                finishing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

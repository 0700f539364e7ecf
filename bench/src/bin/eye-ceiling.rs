//! `eye-ceiling`: the ceiling of `scripts/bench-ingest`, a separate minimal axum server that
//! only parses each body as JSON and answers 202 ([`the_eye_bench::ceiling`]).
//!
//! Built on what The Eye is built on (the workspace's one lockfile: the same axum, hyper and
//! tokio, tokio's multi-thread runtime with its default number of workers, mimalloc as the
//! allocator, `TCP_NODELAY` on every connection), with no middleware and no connection
//! handling of its own, so that everything The Eye adds counts against it.
//!
//! `eye-ceiling --listen 127.0.0.1:8100`; stops on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::serve::ListenerExt;
use clap::Parser;

// The Eye's allocator: the ceiling should differ from it only in what The Eye does per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "eye-ceiling",
    version,
    about = "The ingest benchmark's ceiling: parse the JSON body, answer 202, nothing else"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("eye-ceiling: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(address) = listener.local_addr() {
        println!("eye-ceiling listening on {address}");
    }
    // As The Eye's listener does: answers are small and must not wait to fill a packet.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let served = axum::serve(listener, the_eye_bench::ceiling::router())
        .with_graceful_shutdown(stopped())
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eye-ceiling: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (how `scripts/bench-ingest` stops it) or Ctrl-C.
async fn stopped() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

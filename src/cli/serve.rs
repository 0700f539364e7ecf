//! `serve`, `migrate` and `healthcheck`: running the service, applying its migrations, and
//! asking a running instance whether it is healthy.

use std::time::Duration;

use the_eye::{Config, Error};

use super::loopback;

pub(super) async fn serve(config: Config) -> Result<(), Error> {
    let listener = the_eye::bind("server.listen_addr", config.server.listen_addr).await?;
    the_eye::serve(config, listener, shutdown_signal()).await
}

pub(super) async fn migrate(config: Config) -> Result<(), Error> {
    let (store, _devserver) = the_eye::connect_shared(&config).await?;
    let applied = the_eye::migrate(&store, Duration::from_secs(60)).await?;
    the_eye::apply_schema_settings(&store, &config).await?;
    if applied.is_empty() {
        println!("database `{}` is up to date", store.database());
    } else {
        println!(
            "database `{}`: applied migrations {applied:?}",
            store.database()
        );
    }
    Ok(())
}

/// Asks `GET path` of the server listening on `listen_addr` (on loopback when it listens on
/// every interface) and succeeds on a 200, within 3 seconds.
pub(super) fn healthcheck(listen_addr: std::net::SocketAddr, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let address = loopback(listen_addr);
    let timeout = Duration::from_secs(3);
    let failed = |error: std::io::Error| format!("{address}: {error}");
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(failed)?;
    let mut head = Vec::new();
    stream.take(4096).read_to_end(&mut head).map_err(failed)?;
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or("").trim();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "GET {path} from {address} answered `{status_line}`"
        )),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

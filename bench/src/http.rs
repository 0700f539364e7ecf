//! The HTTP side: one HTTP/1.1 keep-alive connection per worker (hyper's low-level client,
//! so that concurrency N means exactly N connections and no pool sits in between), the
//! target's address, and scraping the service's `/metrics` (on its metrics address).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where the service listens: `http://HOST:PORT`, on this machine only.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `Host` header.
    pub authority: String,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `http://host:port[/]`. Only loopback addresses are accepted: a load generator
    /// pointed at a shared or production server by mistake does real harm.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|error| format!("`{url}`: {error}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|addr| addr.ip().is_loopback())
            .copied()
            .ok_or_else(|| {
                format!("`{url}` is not a loopback address; eye-bench only targets this machine")
            })?;
        Ok(Self {
            authority: authority.to_owned(),
            addr,
        })
    }
}

/// Opens a keep-alive connection.
pub async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `GET path` on a fresh connection; the status and the body.
pub async fn get(target: &Target, path: &str, timeout: Duration) -> Result<(u16, Bytes), Error> {
    tokio::time::timeout(timeout, async {
        let stream = TcpStream::connect(target.addr).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(hyper::header::HOST, &target.authority)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, Error>((status, body))
    })
    .await
    .map_err(|_| Error::from(format!("GET {path} timed out")))?
}

/// The `events` figures of The Eye's `/metrics` that a run reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceCounters {
    /// `the_eye_rows_inserted_total{table="events"}`.
    pub rows_inserted: f64,
    /// `the_eye_queue_depth{table="events"}`.
    pub queue_depth: f64,
    /// `the_eye_batch_rows_count{table="events"}`: batches written.
    pub batches: f64,
    /// `the_eye_flush_duration_seconds_sum{table="events"}`: time spent writing batches.
    pub flush_seconds: f64,
    /// `the_eye_spool_syncs_total`: spool fdatasyncs (0 without a spool).
    pub spool_syncs: f64,
    /// `the_eye_spool_rows_per_sync_sum`: rows those syncs made durable.
    pub spool_synced_rows: f64,
}

impl ServiceCounters {
    /// Reads the series from Prometheus text; `None` when the inserted-rows counter is
    /// missing (not The Eye, or a renamed metric).
    pub fn parse(text: &str) -> Option<Self> {
        let mut counters = Self::default();
        let mut found = false;
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            match series {
                r#"the_eye_rows_inserted_total{table="events"}"# => {
                    counters.rows_inserted = value;
                    found = true;
                }
                r#"the_eye_queue_depth{table="events"}"# => counters.queue_depth = value,
                r#"the_eye_batch_rows_count{table="events"}"# => counters.batches = value,
                r#"the_eye_flush_duration_seconds_sum{table="events"}"# => {
                    counters.flush_seconds = value;
                }
                "the_eye_spool_syncs_total" => counters.spool_syncs = value,
                "the_eye_spool_rows_per_sync_sum" => counters.spool_synced_rows = value,
                _ => {}
            }
        }
        // Before the first insert the labelled counter has no series yet: that is zero.
        if !found && text.contains("the_eye_build_info") {
            found = true;
        }
        found.then_some(counters)
    }
}

/// Scrapes `/metrics` of the metrics server at `target`.
pub async fn service_counters(target: &Target) -> Result<ServiceCounters, Error> {
    let (status, body) = get(target, "/metrics", Duration::from_secs(5)).await?;
    if status != 200 {
        return Err(format!("/metrics answered {status}").into());
    }
    let text = std::str::from_utf8(&body)?;
    ServiceCounters::parse(text)
        .ok_or_else(|| Error::from("/metrics has no the_eye_rows_inserted_total: is this The Eye?"))
}

/// The number after `"accepted":` in an ingest answer (`{"accepted":n,"rejected":m,…}`),
/// read without parsing the whole answer, whose per-event results are long for big batches.
pub fn json_count(body: &[u8], field: &str) -> Option<u64> {
    let needle = format!("\"{field}\":");
    let start = body
        .windows(needle.len())
        .position(|window| window == needle.as_bytes())?
        + needle.len();
    let digits: Vec<u8> = body[start..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_targets_only() {
        let target = Target::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(target.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(target.authority, "127.0.0.1:8000");
        assert_eq!(Target::parse("http://127.0.0.1/").unwrap().addr.port(), 80);
        assert!(Target::parse("https://127.0.0.1:8000").is_err());
        assert!(Target::parse("http://192.0.2.1:8000").is_err());
    }

    #[test]
    fn reads_counts_from_answers() {
        let body = br#"{"accepted":100,"rejected":2,"results":[]}"#;
        assert_eq!(json_count(body, "accepted"), Some(100));
        assert_eq!(json_count(body, "rejected"), Some(2));
        assert_eq!(json_count(b"{}", "accepted"), None);
    }

    #[test]
    fn parses_service_metrics() {
        let text = "# HELP x\n\
            the_eye_rows_inserted_total{table=\"errors\"} 5\n\
            the_eye_rows_inserted_total{table=\"events\"} 12345\n\
            the_eye_queue_depth{table=\"events\"} 17\n\
            the_eye_batch_rows_count{table=\"events\"} 3\n\
            the_eye_flush_duration_seconds_sum{table=\"events\"} 0.25\n\
            the_eye_spool_syncs_total 40\n\
            the_eye_spool_rows_per_sync_sum 400\n";
        let counters = ServiceCounters::parse(text).unwrap();
        assert_eq!(counters.rows_inserted, 12345.0);
        assert_eq!(counters.queue_depth, 17.0);
        assert_eq!(counters.batches, 3.0);
        assert_eq!(counters.flush_seconds, 0.25);
        assert_eq!(counters.spool_syncs, 40.0);
        assert_eq!(counters.spool_synced_rows, 400.0);
        assert!(ServiceCounters::parse("nothing here").is_none());
        assert_eq!(
            ServiceCounters::parse("the_eye_build_info{version=\"0.1.0\"} 1"),
            Some(ServiceCounters::default())
        );
    }
}

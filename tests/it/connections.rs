//! Slow and idle clients against the real listener, over real sockets on 127.0.0.1: the
//! first-byte, header-read and keep-alive timeouts close them; over the connection cap, or
//! over one address's cap, new connections are refused at once while the open ones (and
//! other addresses) keep being served; the metrics address has a cap of its own; broken body
//! framing is a 400; and SIGTERM under load answers every request that was sent.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, Instant};

use crate::common::{provision, test_config, TestApp, TestDb};

/// The head of a request that a slowloris client starts and never finishes.
const SLOW_HEAD: &[u8] = b"POST /api/events HTTP/1.1\r\nHost: x\r\n";
const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads one answer to `GET /healthz` (its body is short and comes with the head).
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buffer = vec![0; 4096];
    let read = timeout(Duration::from_secs(30), stream.read(&mut buffer))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// Whether the server closes `stream` (end of file or reset) before `deadline`; bytes the
/// server sends before closing are ignored.
async fn closed_before(stream: &mut (impl AsyncRead + Unpin), deadline: Instant) -> bool {
    let mut buffer = [0; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let app = TestApp::start_with(|config| {
        config.server.header_read_timeout_ms = 500;
        config.server.keep_alive_timeout_ms = 1_500;
    })
    .await;
    let bound = Instant::now() + Duration::from_secs(30);

    // One header line every 200 ms: each comes well within any per-line timeout, but the
    // head as a whole never completes.
    let (mut watcher, mut slow) = connect(&app).await.into_split();
    slow.write_all(SLOW_HEAD).await.unwrap();
    let trickle = async {
        for line in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let header = format!("x-line-{line}: 1\r\n");
            if slow.write_all(header.as_bytes()).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = trickle => {}
        closed = closed_before(&mut watcher, bound) => assert!(closed, "a trickled head kept its connection"),
    }

    // A client that sends requests more often than the keep-alive timeout keeps its
    // connection for longer than that timeout.
    let mut steady = connect(&app).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3_000) {
        steady.write_all(HEALTH).await.unwrap();
        assert!(read_answer(&mut steady).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Once it stops, the connection is closed.
    assert!(
        closed_before(&mut steady, bound).await,
        "an idle connection was kept"
    );

    // A connection that never sends a byte is idle too.
    let mut silent = connect(&app).await;
    assert!(
        closed_before(&mut silent, bound).await,
        "a silent connection was kept"
    );
}

#[tokio::test]
async fn over_the_cap_new_connections_are_refused_and_open_ones_served() {
    let app = TestApp::start_with(|config| config.server.max_connections = 8).await;
    let bound = Instant::now() + Duration::from_secs(60);

    let mut ordinary = connect(&app).await;
    ordinary.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut ordinary).await.starts_with("HTTP/1.1 200"));
    let mut slow = Vec::new();
    for _ in 0..7 {
        let mut stream = connect(&app).await;
        stream.write_all(SLOW_HEAD).await.unwrap();
        slow.push(stream);
    }

    // The accept loop takes connections in order; once it has taken the slow ones, a new
    // connection is answered at once without sending anything. A probe that the server
    // accepted instead (it was quicker than the slow ones) waits: give up on it and retry.
    let refusal = loop {
        assert!(
            Instant::now() < bound,
            "no connection was refused over the cap"
        );
        let mut probe = connect(&app).await;
        let mut answer = Vec::new();
        if let Ok(Ok(_)) = timeout(Duration::from_secs(2), probe.read_to_end(&mut answer)).await {
            break String::from_utf8_lossy(&answer).into_owned();
        }
    };
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    let body: the_eye_types::ErrorBody =
        serde_json::from_str(refusal.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body.code, "too_many_connections");

    // The connection that was open before keeps being served.
    for _ in 0..3 {
        ordinary.write_all(HEALTH).await.unwrap();
        assert!(read_answer(&mut ordinary).await.starts_with("HTTP/1.1 200"));
    }

    // Once the slow clients go, new connections are served again.
    drop(slow);
    loop {
        assert!(Instant::now() < bound, "slots were not freed");
        let mut fresh = connect(&app).await;
        let mut buffer = vec![0; 4096];
        // A refused connection may be reset rather than answered, having sent its request.
        if fresh.write_all(HEALTH).await.is_ok() {
            if let Ok(Ok(read)) = timeout(Duration::from_secs(10), fresh.read(&mut buffer)).await {
                if buffer[..read].starts_with(b"HTTP/1.1 200") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app
        .metrics_text()
        .await
        .lines()
        .any(|line| line
            .starts_with("the_eye_requests_rejected_total{code=\"too_many_connections\"}")));
}

/// Sends `head` and `body` on a fresh connection, closes the sending side (so a body shorter
/// than announced ends there), and reads the whole answer. (hyper closes a connection whose
/// client closes its side after a whole request without answering it, so those are sent
/// by hand.)
async fn answer_to_raw(
    app: &TestApp,
    head: &str,
    body: &[u8],
) -> (String, the_eye_types::ErrorBody) {
    let mut stream = connect(app).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (status, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {answer}"));
    (status.lines().next().unwrap().to_owned(), body)
}

/// A body whose framing breaks, or that ends before its length, is a 400 of its own: not the
/// `413 body_too_large` that would make a client split it and send it again.
#[tokio::test]
async fn broken_framing_and_short_bodies_are_400_not_413() {
    let app = TestApp::start().await;
    let event = br#"{"session_id": "s", "category": "c", "name": "n", "data": {"a": 1}, "timestamp": "2024-05-01T10:00:00Z"}"#;
    let head = |framing: &str| {
        format!(
            "POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n{framing}\r\n",
            app.key
        )
    };

    // A chunk-size line that is not hexadecimal.
    let (status, body) = answer_to_raw(
        &app,
        &head("Transfer-Encoding: chunked\r\n"),
        b"zz\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("HTTP/1.1 400 Bad Request", "malformed_framing")
    );
    // A good chunk, then a broken one.
    let mut chunked = format!("{:x}\r\n", event.len()).into_bytes();
    chunked.extend_from_slice(event);
    chunked.extend_from_slice(b"\r\n5\r\nabcdeXX\r\n0\r\n\r\n");
    let (status, body) =
        answer_to_raw(&app, &head("Transfer-Encoding: chunked\r\n"), &chunked).await;
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("HTTP/1.1 400 Bad Request", "malformed_framing")
    );

    // Fewer bytes than `Content-Length`, then the client's side closes.
    let length = format!("Content-Length: {}\r\n", event.len() + 100);
    let (status, body) = answer_to_raw(&app, &head(&length), event).await;
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("HTTP/1.1 400 Bad Request", "body_incomplete")
    );
    // A chunked body that stops before its last chunk.
    let (status, body) = answer_to_raw(
        &app,
        &head("Transfer-Encoding: chunked\r\n"),
        &chunked[..40],
    )
    .await;
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("HTTP/1.1 400 Bad Request", "body_incomplete")
    );

    // The same event, framed right, is accepted (a body over the limit is still a 413:
    // `tests/it/ingest.rs`).
    let length = format!("Content-Length: {}\r\n", event.len());
    let mut stream = connect(&app).await;
    stream.write_all(head(&length).as_bytes()).await.unwrap();
    stream.write_all(event).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    for code in ["malformed_framing", "body_incomplete"] {
        let series = format!("the_eye_requests_rejected_total{{code=\"{code}\"}}");
        assert!(
            app.metrics_text()
                .await
                .lines()
                .any(|line| line.starts_with(&series)),
            "{series}"
        );
    }
}

/// Reads the whole answer a server sends before closing, within 30 s.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("closed within 30 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line and error code of a refusal such as `503 too_many_connections`.
fn refusal(answer: &str) -> (&str, String) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a complete answer: {answer:?}"));
    let body: the_eye_types::ErrorBody = serde_json::from_str(body).expect("the error shape");
    (head.lines().next().unwrap(), body.code)
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_first_byte_deadline() {
    // The keep-alive timeout is far beyond the test's bound: only the first-byte deadline can
    // close the silent connection in time.
    let app = TestApp::start_with(|config| {
        config.server.first_byte_timeout_ms = 300;
        config.server.keep_alive_timeout_ms = 600_000;
    })
    .await;
    let bound = Instant::now() + Duration::from_secs(60);
    let mut silent = connect(&app).await;
    assert!(
        closed_before(&mut silent, bound).await,
        "a connection that never sent a byte was kept"
    );
    // Once a connection has been served, it waits for its next request as keep-alive allows.
    let mut served = connect(&app).await;
    served.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut served).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    served.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut served).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn one_address_over_its_cap_is_refused_while_another_is_served() {
    let app = TestApp::start_with(|config| {
        config.server.max_connections_per_peer = 4;
        config.server.first_byte_timeout_ms = 600_000;
    })
    .await;
    let address: SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    // Four silent connections from 127.0.0.1 take its share; the accept loop takes them in
    // order, so a fifth comes after them.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    let mut fifth = connect(&app).await;
    let answer = read_until_closed(&mut fifth).await;
    assert_eq!(
        refusal(&answer),
        (
            "HTTP/1.1 503 Service Unavailable",
            "too_many_peer_connections".to_owned()
        )
    );

    // Another address (all of 127/8 is loopback) is served.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(address).await.unwrap();
    other.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut other).await.starts_with("HTTP/1.1 200"));
    // And so are the connections that were open.
    held[0].write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut held[0]).await.starts_with("HTTP/1.1 200"));
    // Once they go, the address is served again.
    drop(held);
    let bound = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < bound, "the address's slots were not freed");
        let mut fresh = connect(&app).await;
        if fresh.write_all(HEALTH).await.is_ok() {
            if let Ok(Ok(answer)) = timeout(Duration::from_secs(10), async {
                let mut buffer = vec![0; 4096];
                fresh
                    .read(&mut buffer)
                    .await
                    .map(|read| buffer.truncate(read))
                    .map(|()| buffer)
            })
            .await
            {
                if answer.starts_with(b"HTTP/1.1 200") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.metrics_text().await.lines().any(|line| line
        .starts_with("the_eye_requests_rejected_total{code=\"too_many_peer_connections\"}")));
}

/// The Eye as a child process on `db`, with `env` on top of the test defaults, and at most
/// `open_files` file descriptors when given.
struct Eye {
    process: tokio::process::Child,
    address: SocketAddr,
    metrics_address: SocketAddr,
}

impl Eye {
    async fn start(db: &TestDb, env: &[(&str, &str)], open_files: Option<u32>) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (address, metrics_address) = (free(), free());
        // `ulimit` in the shell, which then becomes The Eye: the limit is the process's own.
        let script = match open_files {
            Some(limit) => format!("ulimit -n {limit} && exec \"$0\" serve"),
            None => "exec \"$0\" serve".to_owned(),
        };
        let process = tokio::process::Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_the-eye")])
            .envs(db.env())
            .env("THE_EYE_CLICKHOUSE_MIGRATE_ON_START", "false")
            .env("THE_EYE_SERVER_LISTEN_ADDR", address.to_string())
            .env(
                "THE_EYE_SERVER_METRICS_LISTEN_ADDR",
                metrics_address.to_string(),
            )
            .env("THE_EYE_SERVER_LOG_FILTER", "warn")
            .env("THE_EYE_PIPELINE_SPOOL_DIR", db.spool.path())
            .env("THE_EYE_PIPELINE_FLUSH_INTERVAL_MS", "100")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .spawn()
            .expect("the-eye starts");
        let eye = Self {
            process,
            address,
            metrics_address,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("http://{address}/readyz")).await {
                if response.status().is_success() {
                    return eye;
                }
            }
            assert!(Instant::now() < deadline, "the child did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn event(session: &str, id: &str) -> Value {
    json!({
        "event_id": id,
        "session_id": session,
        "category": "page interaction",
        "name": "pageview",
        "data": {"host": "example.com", "path": "/"},
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}

/// More silent connections to the metrics address than its cap, and than the process has
/// file descriptors: the ones over the cap are refused and closed at once, and the API goes
/// on serving `/healthz` and ingest. Without the cap, the silent connections take every
/// descriptor and the API cannot accept.
#[tokio::test]
async fn silent_metrics_connections_do_not_starve_the_api() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let (_, _, key) = provision(&db, &config, None).await;
    let eye = Eye::start(
        &db,
        &[
            ("THE_EYE_SERVER_METRICS_MAX_CONNECTIONS", "8"),
            ("THE_EYE_SERVER_FIRST_BYTE_TIMEOUT_MS", "600000"),
        ],
        Some(256),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..400 {
        silent.push(TcpStream::connect(eye.metrics_address).await.unwrap());
    }
    // The last is over the cap: answered and closed without sending anything.
    let mut last = silent.pop().unwrap();
    let answer = read_until_closed(&mut last).await;
    assert_eq!(
        refusal(&answer),
        (
            "HTTP/1.1 503 Service Unavailable",
            "too_many_connections".to_owned()
        )
    );

    let http = crate::common::client_with_key(&key);
    let health = timeout(
        Duration::from_secs(30),
        http.get(format!("http://{}/healthz", eye.address)).send(),
    )
    .await
    .expect("/healthz answers within 30 s")
    .expect("/healthz");
    assert_eq!(health.status(), 200);
    let ingest = timeout(
        Duration::from_secs(30),
        http.post(format!("http://{}/api/events", eye.address))
            .json(&event("s-metrics", &uuid::Uuid::new_v4().to_string()))
            .send(),
    )
    .await
    .expect("ingest answers within 30 s")
    .expect("ingest");
    assert_eq!(ingest.status(), 202);
    drop(silent);
    drop(eye);
}

/// One HTTP/1.1 answer read off a raw connection: status, whether it carries `Connection:
/// close`, and its body. `Err` when the connection ends (or fails) before the answer is whole.
async fn read_response(stream: &mut TcpStream) -> Result<(u16, bool, Vec<u8>), String> {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) => {
                return Err(format!(
                    "end of file after {} bytes of an answer",
                    buffer.len()
                ))
            }
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error) => return Err(format!("{error} after {} bytes of an answer", buffer.len())),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| format!("no content-length in {head:?}"))?;
    let close = head.lines().any(|line| line.trim() == "connection: close");
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) => {
                return Err(format!(
                    "end of file {} bytes into a body of {length}",
                    body.len()
                ))
            }
            Ok(read) => body.extend_from_slice(&chunk[..read]),
            Err(error) => {
                return Err(format!(
                    "{error} {} bytes into a body of {length}",
                    body.len()
                ))
            }
        }
    }
    Ok((status, close, body))
}

/// SIGTERM while 64 keep-alive connections send: every request sent gets a whole answer, a
/// 202 or a `503 shutting_down` (with `Retry-After`), each connection ends after an answer
/// that says `Connection: close`, none is closed or reset under a request; and every event
/// answered 202 is in ClickHouse exactly once once the process has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_request_sent() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let (_, _, key) = provision(&db, &config, Some(1_000_000)).await;
    // So that a duplicate row stays visible to `count()`.
    db.stop_merges().await;
    let mut eye = Eye::start(&db, &[], None).await;

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(0_usize));
    let mut clients = Vec::new();
    for connection in 0..64 {
        let mut stream = TcpStream::connect(eye.address).await.unwrap();
        let (accepted, refused, key) = (accepted.clone(), refused.clone(), key.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: the process is signalled within seconds of the start.
            for round in 0..100_000 {
                // Half the clients pause between requests, as real ones do: at the signal,
                // some connections are between requests, and their next request comes after
                // it (answered 503), rather than every connection having one in flight.
                if connection % 2 == 1 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let ids: Vec<String> = (0..10).map(|_| uuid::Uuid::new_v4().to_string()).collect();
                let session = format!("s-{connection}");
                let body = serde_json::to_vec(&ids.iter().map(|id| event(&session, id)).collect::<Vec<_>>()).unwrap();
                let head = format!(
                    "POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let mut request = head.into_bytes();
                request.extend_from_slice(&body);
                if let Err(error) = stream.write_all(&request).await {
                    return Err(format!("connection {connection}, request {round}: sending failed: {error}"));
                }
                let (status, close, answer) = read_response(&mut stream)
                    .await
                    .map_err(|error| format!("connection {connection}, request {round}: {error}"))?;
                match status {
                    202 => accepted.lock().unwrap().extend(ids),
                    503 => {
                        let answer: Value = serde_json::from_slice(&answer).unwrap();
                        if answer["code"] != "shutting_down" {
                            return Err(format!("connection {connection}: 503 {answer}"));
                        }
                        *refused.lock().unwrap() += 1;
                    }
                    other => return Err(format!("connection {connection}: status {other}")),
                }
                if close {
                    return Ok(round + 1);
                }
            }
            Err(format!("connection {connection} was never closed"))
        }));
    }
    // Until the load is well under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < 5_000 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::common::signal(eye.process.id().expect("running"), "TERM");
    let mut failures = Vec::new();
    let mut requests = 0;
    for client in clients {
        match client.await.unwrap() {
            Ok(answered) => requests += answered,
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 64 connections: {failures:#?}",
        failures.len()
    );
    let status = timeout(Duration::from_secs(120), eye.process.wait())
        .await
        .expect("the process exits")
        .unwrap();
    assert!(status.success(), "{status:?}");

    let refused = *refused.lock().unwrap();
    // 32 connections idle two thirds of the time or more: that none was at the signal is
    // about as likely as 0.7^32.
    assert!(
        refused > 0,
        "no request came between the signal and the close"
    );
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    let stored = db.event_ids().await;
    let missing = accepted.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "of {} events answered 202 ({requests} requests)",
        accepted.len()
    );
    let (count, unique) = db.event_counts().await;
    assert_eq!(count, unique, "{} duplicate rows", count - unique);
    eprintln!(
        "{requests} requests answered on 64 connections: {} events accepted, {} requests refused shutting_down",
        accepted.len(),
        refused
    );
}

/// Issue 28, item 13: what hyper answers by itself — a request line it cannot read (400), a
/// URI over 65,534 bytes (414), more than 100 headers (431) — carries the JSON error shape
/// with a stable code, like every other answer, and the connection is then closed.
#[tokio::test]
async fn requests_hyper_cannot_read_get_the_error_shape() {
    let app = TestApp::start().await;
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    for (request, status, code) in [
        (
            "NOT A REQUEST\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "malformed_request",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_owned(),
            "HTTP/1.1 400 Bad Request",
            "malformed_request",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)),
            "HTTP/1.1 414 URI Too Long",
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "headers_too_large",
        ),
    ] {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        assert_eq!(
            refusal(&answer),
            (status, code.to_owned()),
            "{}",
            &request[..40.min(request.len())]
        );
    }
    // The connection after them is served as usual.
    let mut stream = connect(&app).await;
    stream.write_all(HEALTH).await.unwrap();
    assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
}

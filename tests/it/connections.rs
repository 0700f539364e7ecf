//! Slow and idle clients against the real listener, over real sockets on 127.0.0.1: the
//! header-read and keep-alive timeouts close them, and over the connection cap new
//! connections are refused at once while the open ones keep being served.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::common::TestApp;

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

//! The spool on a real, small filesystem (an 8 MiB tmpfs mounted for the test; CI runs as
//! root, and the test fails if it cannot mount one): with the default 32 MiB segments and
//! 1 GiB budget, filled by another file under load while ClickHouse refuses the table (so
//! that no segment is freed meanwhile, however fast the machine), The Eye answers `503
//! spool_unavailable` with `Retry-After` once the disk's last bytes are spent, and loses
//! nothing it answered 202; once the file is deleted it answers 202
//! again by itself, and keeps doing so, the table back, while twice the disk's size goes
//! through the spool (before, the active segment was reclaimed only at 32 MiB, and 503s came
//! back for good). With a 6 MiB budget: the spool never takes more than its budget; SIGTERM
//! on a full disk still drains; a start on a full disk serves and replays, and answers 503
//! until it can append. Its directory and files are the owner's alone, whatever the umask;
//! and every event answered 202 is in ClickHouse exactly once at the end.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{provision, test_config, TestDb};
use crate::spool::Child;

/// The spool's budget: below the filesystem's 8 MiB, so that the budget binds once the disk
/// has room, and the disk binds while the filler takes it.
const BUDGET_BYTES: u64 = 6 * 1024 * 1024;

/// A tmpfs of `size` mounted on a temporary directory, unmounted when dropped (also when the
/// test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("the-eye-tmpfs-")
            .tempdir()
            .expect("a mount point");
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => Self { dir },
            Ok(output) => panic!(
                "cannot mount a tmpfs on {} (this test needs root, as CI has): {}",
                dir.path().display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => panic!("cannot run mount: {error}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free (tmpfs keeps none back for root).
    fn free_bytes(&self) -> u64 {
        let output = std::process::Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .expect("stat runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace().map(|field| field.parse::<u64>());
        match (fields.next(), fields.next()) {
            (Some(Ok(blocks)), Some(Ok(size))) => blocks * size,
            _ => panic!("stat -f: {text}"),
        }
    }

    /// Writes `name` until the filesystem has at most `leave` bytes free (or is full).
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("the filler is created");
        let chunk = vec![0x55u8; 4096];
        let mut left = self.free_bytes().saturating_sub(leave);
        while left > 0 {
            let size = chunk.len().min(left as usize);
            if file.write_all(&chunk[..size]).is_err() {
                break;
            }
            left -= size as u64;
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a child still closing its files must not keep the mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.path())
            .status();
    }
}

/// Bytes the files of `dir` take on disk (allocated blocks, or length if larger).
fn disk_use(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| (meta.blocks() * 512).max(meta.len()))
        .sum()
}

/// What the senders saw, by phase.
#[derive(Default)]
struct Seen {
    /// Every event id answered 202.
    accepted: Vec<String>,
    /// Answers in the current phase: status and code.
    answers: Vec<(u16, String)>,
    /// 503s without `Retry-After`.
    missing_retry_after: u64,
}

/// Four senders posting batches of 20 events until stopped (at most 100,000 rounds each).
struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(child: &Child, tag: &str) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let (http, url) = (child.http.clone(), format!("{}/api/events", child.url));
            let (seen, stop, tag) = (seen.clone(), stop.clone(), tag.to_owned());
            tasks.push(tokio::spawn(async move {
                for round in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let batch: Vec<Value> = (0..20)
                        .map(|i| event(&format!("{tag}-{worker}"), &format!("e{round}-{i}")))
                        .collect();
                    let (status, code, ids) = post(&http, &url, &Value::from(batch)).await;
                    {
                        let mut seen = seen.lock().unwrap();
                        if status == 503 && code.ends_with("(no Retry-After)") {
                            seen.missing_retry_after += 1;
                        }
                        seen.accepted.extend(ids);
                        seen.answers.push((status, code));
                    }
                    if status != 202 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        Self { seen, stop, tasks }
    }

    /// Waits (at most `limit`) until `done` holds for what was seen in this phase.
    async fn until(&self, limit: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(&self.seen.lock().unwrap()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The answers seen since the last call, which starts a new phase.
    fn phase(&self) -> Vec<(u16, String)> {
        std::mem::take(&mut self.seen.lock().unwrap().answers)
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.seen)
            .map_err(|_| ())
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn event(session: &str, name: &str) -> Value {
    json!({
        "session_id": session,
        "category": "page interaction",
        "name": name,
        "data": {"host": "example.com", "path": "/a/path/of/some/length", "query": "q=1&r=2"},
        "timestamp": "2024-05-01T10:00:00Z",
    })
}

/// Posts `body`: the status, the error code (marked when a 503 has no `Retry-After`) and
/// the event ids of a 202.
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> (u16, String, Vec<String>) {
    let Ok(response) = http.post(url).json(body).send().await else {
        return (0, "connection".to_owned(), Vec::new());
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if status == 202 {
        let ids = answer["results"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .filter_map(|result| result["event_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        return (status, String::new(), ids);
    }
    let mut code = answer["code"].as_str().unwrap_or_default().to_owned();
    if status == 503 && !retry_after {
        code.push_str(" (no Retry-After)");
    }
    (status, code, Vec::new())
}

fn count(answers: &[(u16, String)], status: u16, code: &str) -> usize {
    answers
        .iter()
        .filter(|(s, c)| *s == status && c == code)
        .count()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A full disk under load, with nothing confirmed meanwhile: the spool runs out of disk and
/// requests are answered 503 with `Retry-After`; once space is freed 202s come back without a
/// restart; with a budget below
/// the disk the spool never takes more than its budget (503 `queue_full`), under concurrent
/// senders too; SIGTERM on a full disk drains; a start on a full disk replays what the last
/// run left, answers 503, then 202 once there is room; and every event answered 202 is in
/// ClickHouse exactly once. Files stay private under an open umask.
///
/// One test: the phases share one small filesystem, one spool directory and one database,
/// and each starts from what the previous one left (the drain and the start on a full disk
/// replay the rows of the run before); the accepted events checked at the end span them all.
/// Split, every part would rebuild that state, the slowest setup in the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_recovers_by_itself_and_loses_nothing() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let (_, _, key) = provision(&db, &config, Some(1_000_000)).await;
    db.stop_merges().await;
    let tmpfs = Tmpfs::mount("8m");
    let spool = tmpfs.path().join("spool");
    let budget = BUDGET_BYTES.to_string();
    // The report's configuration first: 32 MiB segments and a 1 GiB budget (the defaults),
    // on a disk of 8 MiB.
    let defaults = [("THE_EYE_SERVER_LOG_FILTER", "error")];
    let env = [
        ("THE_EYE_PIPELINE_SPOOL_MAX_BYTES", budget.as_str()),
        ("THE_EYE_PIPELINE_SPOOL_SEGMENT_BYTES", "1048576"),
        ("THE_EYE_SERVER_LOG_FILTER", "error"),
    ];
    // Disk use of the spool, sampled every 20 ms for the whole test.
    let most = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (most, sampling, spool) = (most.clone(), sampling.clone(), spool.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                most.fetch_max(disk_use(&spool), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut accepted: Vec<String> = Vec::new();

    // Under a umask that would leave everything open to all.
    let mut child = Child::start_under(&db, &spool, &key, &defaults, Some("000")).await;
    let load = Load::start(&child, "a");
    assert!(
        load.until(Duration::from_secs(60), |seen| seen.accepted.len() >= 2_000)
            .await,
        "2,000 events accepted before the disk is filled"
    );
    assert_eq!(mode(&spool), 0o700, "the spool directory");
    for entry in std::fs::read_dir(&spool).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }

    // ClickHouse refuses `events` (renamed away): batches are held, no row is confirmed, so
    // no segment can be deleted and the spool has only what it holds and what the disk has
    // left. Without this the drain frees confirmed segments while the disk is full and the
    // spool can keep pace with the load in the space it frees: whether 503s go on then
    // depends on how fast the machine drains, not on the guarantee.
    rename(&db, "events", "events_away").await;
    // Another file takes all but 192 KiB: the spool runs out of disk under load. It appends
    // into the last free bytes, then every append fails and stays failing: nothing is freed
    // while the table is away.
    let filler = tmpfs.fill("filler", 192 * 1024);
    load.phase();
    assert!(
        load.until(Duration::from_secs(60), |seen| {
            count(&seen.answers, 503, "spool_unavailable") >= 20
        })
        .await,
        "503 spool_unavailable once the disk is full: {:?}",
        &load.phase()[..]
    );
    let full = load.phase();
    let refused = count(&full, 503, "spool_unavailable");
    assert_eq!(
        full.iter().filter(|(status, _)| *status != 202).count(),
        refused,
        "a full disk answers only 503 spool_unavailable: {full:?}"
    );

    // The filler goes: 202s come back without a restart, and with the table still away, so
    // from the disk's room alone.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        load.until(Duration::from_secs(60), |seen| {
            seen.answers.iter().any(|(status, _)| *status == 202)
        })
        .await,
        "202 again once the disk has room"
    );
    // The table comes back: the held rows land and their segments go. The next phase starts
    // once they have, so that it measures steady traffic, not the backlog.
    rename(&db, "events_away", "events").await;
    let held = load.seen.lock().unwrap().accepted.len() as u64;
    assert!(
        db.wait_for_count("SELECT count() FROM events", held).await >= held,
        "the rows held while the table was away landed"
    );
    load.phase();
    // 4,000 requests of about 3.5 KB: twice what the disk holds goes through the spool.
    assert!(
        load.until(Duration::from_secs(180), |seen| seen.answers.len() >= 4_000)
            .await,
        "4,000 more requests answered"
    );
    let after = load.phase();
    assert_eq!(
        count(&after, 202, ""),
        after.len(),
        "every request after the recovery answered 202: {:?}",
        after
            .iter()
            .filter(|(status, _)| *status != 202)
            .collect::<Vec<_>>()
    );
    let seen = load.stop().await;
    assert_eq!(seen.missing_retry_after, 0, "every 503 has Retry-After");
    assert!(refused > 0);
    accepted.extend(seen.accepted);

    child.signal("-TERM").await;
    assert!(child.wait().await.success());

    // From here on a budget of 6 MiB, below the disk's 8 MiB, in segments of 1 MiB. Rows
    // that no flush writes (the interval is long) fill the budget: 503 `queue_full`, and the
    // spool never takes more than its budget on disk.
    most.store(0, Ordering::Relaxed);
    let slow = [
        env[0],
        env[1],
        env[2],
        ("THE_EYE_PIPELINE_FLUSH_INTERVAL_MS", "600000"),
        ("THE_EYE_PIPELINE_BATCH_MAX_ROWS", "1000000"),
    ];
    let mut child = Child::start(&db, &spool, &key, &slow).await;
    // Four concurrent senders: appends admitted while the writer writes others must not
    // take the spool past its budget.
    let load = Load::start(&child, "b");
    assert!(
        load.until(Duration::from_secs(120), |seen| {
            count(&seen.answers, 503, "queue_full") >= 20
        })
        .await,
        "503 queue_full once the budget is spent"
    );
    let seen = load.stop().await;
    assert_eq!(
        seen.answers
            .iter()
            .filter(|(status, code)| *status != 202 && !(*status == 503 && code == "queue_full"))
            .count(),
        0,
        "a spent budget answers 503 queue_full"
    );
    let spooled = seen.accepted.len() as u64;
    accepted.extend(seen.accepted);
    let used = disk_use(&spool);
    assert!(
        used > BUDGET_BYTES * 9 / 10 && used <= BUDGET_BYTES,
        "the spool filled its budget and no more: {used} bytes"
    );

    // SIGTERM on a full disk drains: the spooled rows are sealed, inserted and confirmed
    // although the disk has no byte left.
    let brim = tmpfs.fill("brim", 0);
    assert!(tmpfs.free_bytes() < 4096, "the disk is full");
    child.signal("-TERM").await;
    assert!(
        child.wait().await.success(),
        "SIGTERM on a full disk drained"
    );
    assert_eq!(
        db.count("SELECT count() FROM events WHERE startsWith(session_id, 'b-')")
            .await,
        spooled,
        "what was spooled before the disk filled is in ClickHouse"
    );
    std::fs::remove_file(&brim).unwrap();

    // A start on a full disk: rows another run left unconfirmed are replayed, requests are
    // answered 503 while nothing can be appended, and 202 once there is room.
    let mut child = Child::start(&db, &spool, &key, &slow).await;
    for round in 0..50 {
        let batch: Vec<Value> = (0..20)
            .map(|i| event("c", &format!("e{round}-{i}")))
            .collect();
        let (status, code, ids) = post(&child.http, &url_of(&child), &Value::from(batch)).await;
        assert_eq!(status, 202, "{code}");
        accepted.extend(ids);
    }
    child.process.kill().await.unwrap();
    child.wait().await;
    let brim = tmpfs.fill("brim", 0);
    assert!(tmpfs.free_bytes() < 4096, "the disk is full");
    let child = Child::start(&db, &spool, &key, &env).await;
    assert_eq!(
        db.wait_for_count("SELECT count() FROM events WHERE session_id = 'c'", 1_000)
            .await,
        1_000,
        "a start on a full disk replays what the spool holds"
    );
    // The replay freed its segment; take that space too.
    let brim2 = tmpfs.fill("brim2", 0);
    let mut refusals = Vec::new();
    for round in 0..10 {
        let batch: Vec<Value> = (0..20)
            .map(|i| event("d", &format!("e{round}-{i}")))
            .collect();
        let (status, code, ids) = post(&child.http, &url_of(&child), &Value::from(batch)).await;
        accepted.extend(ids);
        refusals.push((status, code));
    }
    assert_eq!(
        count(&refusals, 503, "spool_unavailable"),
        refusals.len(),
        "nothing can be appended: {refusals:?}"
    );
    std::fs::remove_file(&brim).unwrap();
    std::fs::remove_file(&brim2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = 0;
    for round in 0..10_000 {
        let batch: Vec<Value> = (0..20)
            .map(|i| event("e", &format!("e{round}-{i}")))
            .collect();
        let (answer, _, ids) = post(&child.http, &url_of(&child), &Value::from(batch)).await;
        accepted.extend(ids);
        status = answer;
        if status == 202 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 202, "202 once the disk has room, without a restart");

    // Every event answered 202 is in ClickHouse, exactly once.
    let accepted: HashSet<String> = accepted.into_iter().collect();
    assert_eq!(
        db.wait_for_count("SELECT count() FROM events", accepted.len() as u64)
            .await,
        accepted.len() as u64
    );
    db.assert_stored_once(&accepted).await;

    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let most = most.load(Ordering::Relaxed);
    assert!(
        most <= BUDGET_BYTES,
        "the spool took {most} bytes on disk, over its budget of {BUDGET_BYTES}"
    );
    drop(child);
}

/// `RENAME TABLE from TO to` in the test's database: `events` away makes ClickHouse refuse
/// every batch, which The Eye holds (and its rows in the spool) until the table is back.
async fn rename(db: &TestDb, from: &str, to: &str) {
    db.client()
        .query("RENAME TABLE {from:Identifier} TO {to:Identifier}")
        .param("from", from)
        .param("to", to)
        .execute()
        .await
        .unwrap();
}

fn url_of(child: &Child) -> String {
    format!("{}/api/events", child.url)
}

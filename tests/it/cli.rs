//! The `the-eye` command as a newcomer runs it on the first day (issue 32): `serve` on the
//! development ClickHouse in one process and the administrative commands in another, with the
//! same configuration and nothing else set; what a second `serve` says when an address is
//! taken; what `errors replay` says when nothing listens; the demo keys file `.`-sourced as
//! the README has it; and logs without colour codes when stderr is not a terminal.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::signal;

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `the-eye ARGS` in `work` with `THE_EYE_CONFIG=config`, and none of the variables that would
/// point it at a ClickHouse or a service of the test's environment.
fn the_eye(work: &Path, config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_the-eye"));
    command
        .args(args)
        .current_dir(work)
        .env("THE_EYE_CONFIG", config)
        .env_remove("THE_EYE_CLICKHOUSE_URL")
        .env_remove("THE_EYE_URL")
        .env_remove("THE_EYE_API_KEY")
        .env_remove("RUST_LOG");
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command to its end and asserts it succeeded; its stdout.
fn succeeds(mut command: Command, what: &str) -> String {
    let output = command.output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "{what}: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    stdout
}

/// Stops `serve` on drop, so that a failed assertion does not leave it running.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            signal(self.0.id(), "TERM");
            let _ = self.0.wait();
        }
    }
}

/// The CLI beside a running `serve` on the development ClickHouse: the published devserver
/// address is private, the demo keys source into a shell without being read as settings, the
/// administrative commands work with serve's configuration alone, `errors replay` finds serve
/// without `--url`, a second `serve` names the address it cannot have (once) and does not lean
/// on the first one's devserver, and a replay where nothing listens says what to check.
///
/// One test: it starts one `serve` process (and its devserver) and drives the binary beside it;
/// each step needs that process running, and starting it per check would make the suite slow.
#[tokio::test]
async fn the_cli_works_beside_a_running_serve_on_the_development_clickhouse() {
    let work = tempfile::Builder::new()
        .prefix("the-eye-cli-beside-serve-")
        .tempdir()
        .unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = work.path().join("the-eye.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten_addr = \"127.0.0.1:{port}\"\n\
             metrics_listen_addr = \"127.0.0.1:{metrics_port}\"\nlog_filter = \"info\"\n"
        ),
    )
    .unwrap();
    // Logs to a file, not a terminal.
    let serve_log = work.path().join("serve.log");
    let serve = the_eye(work.path(), &config, &["serve"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&serve_log).unwrap())
        .spawn()
        .unwrap();
    let mut serve = Serving(serve);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    loop {
        let ready = reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            break;
        }
        assert!(
            serve.0.try_wait().unwrap().is_none() && tokio::time::Instant::now() < deadline,
            "serve did not become ready: {}",
            std::fs::read_to_string(&serve_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The devserver's address, published for the CLI, private to its user.
    let published = work.path().join("data/clickhouse/devserver.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&published).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", published.display());
    }

    // The demo keys, `.`-sourced as the README does, reach a program it starts.
    let keys = std::fs::read_to_string(work.path().join("data/demo-keys.env")).unwrap();
    for line in keys.lines().filter(|line| !line.starts_with('#')) {
        assert!(line.starts_with("export THE_EYE_"), "{line}");
    }
    let seen = succeeds(
        {
            let mut command = Command::new("bash");
            command
                .args(["-c", ". data/demo-keys.env && printenv THE_EYE_INGEST_KEY"])
                .current_dir(work.path())
                .env_remove("THE_EYE_INGEST_KEY");
            command
        },
        ". data/demo-keys.env",
    );
    assert!(seen.trim().starts_with("eye_"), "{seen}");
    // …and the CLI still runs in that shell: the keys are not read as settings.
    let mut sourced = Command::new("bash");
    sourced
        .args(["-c", ". data/demo-keys.env && \"$0\" apps list"])
        .arg(env!("CARGO_BIN_EXE_the-eye"))
        .current_dir(work.path())
        .env("THE_EYE_CONFIG", &config)
        .env_remove("THE_EYE_CLICKHOUSE_URL");
    let listed = succeeds(sourced, ". data/demo-keys.env && the-eye apps list");
    assert!(listed.contains("demo"), "{listed}");

    // The administrative commands, with serve's configuration and nothing else.
    let created = succeeds(
        the_eye(
            work.path(),
            &config,
            &[
                "apps",
                "create",
                "--name",
                "Web Shop",
                "--origin",
                "https://shop.example",
            ],
        ),
        "apps create",
    );
    assert!(
        created.contains("created application `web-shop`"),
        "{created}"
    );
    let created = succeeds(
        the_eye(
            work.path(),
            &config,
            &["keys", "create", "--org", "--scope", "admin"],
        ),
        "keys create",
    );
    let admin_key = created
        .lines()
        .find_map(|line| line.strip_prefix("key (shown once; store it safely): "))
        .unwrap_or_else(|| panic!("no key in {created}"))
        .to_owned();
    succeeds(
        the_eye(work.path(), &config, &["sessions", "backfill"]),
        "sessions backfill",
    );
    // Without --url: where `serve` listens with the same configuration.
    let mut replay = the_eye(
        work.path(),
        &config,
        &["errors", "replay", "--app", "web-shop", "--dry-run"],
    );
    replay.env("THE_EYE_API_KEY", &admin_key);
    let replayed = succeeds(replay, "errors replay");
    let replayed: serde_json::Value = serde_json::from_str(&replayed).unwrap();
    assert_eq!(replayed["dry_run"], true, "{replayed}");
    assert_eq!(replayed["selected"], 0, "{replayed}");
    // The application the CLI created is the one the service serves.
    let listed = reqwest::Client::new()
        .get(format!("{url}/api/admin/applications"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("\"web-shop\""), "{listed}");

    // A second `serve` with the same configuration: the address it cannot have, named with
    // its setting, said once.
    let output = the_eye(work.path(), &config, &["serve"]).output().unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("server.listen_addr"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "said once: {stderr}");
    let output = the_eye(work.path(), &config, &["serve"])
        .env("THE_EYE_SERVER_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("127.0.0.1:{metrics_port}"))
            && stderr.contains("server.metrics_listen_addr"),
        "{stderr}"
    );

    // A second `serve` on free addresses but the same data directory does not lean on the
    // first one's devserver (which goes when that `serve` stops): it says whose it is.
    let output = the_eye(work.path(), &config, &["serve"])
        .env("THE_EYE_SERVER_LISTEN_ADDR", "127.0.0.1:0")
        .env("THE_EYE_SERVER_METRICS_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("in use by another devserver (at http://127.0.0.1:")
            && stderr.contains("clickhouse.devserver_data_dir"),
        "{stderr}"
    );

    // `errors replay` where nothing listens says so, and what to check.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut replay = the_eye(
        work.path(),
        &config,
        &["errors", "replay", "--url", &dead, "--dry-run"],
    );
    replay.env("THE_EYE_API_KEY", &admin_key);
    let output = replay.output().unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.to_lowercase().contains("connection refused")
            && stderr.contains(&format!("is `the-eye serve` running at {dead}?")),
        "{stderr}"
    );

    signal(serve.0.id(), "TERM");
    assert!(serve.0.wait().unwrap().success());
    assert!(!published.exists(), "the address is withdrawn on stop");
    let log = std::fs::read_to_string(&serve_log).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log file: {log}");
}

/// Every suite and test that starts `serve` gives it both addresses (`server.listen_addr`
/// and `server.metrics_listen_addr`), and no fixed port: with the defaults (8000, 9464), two
/// runs at once, or a run beside a developer's `serve`, would collide (issue 32). Found by
/// reading the scripts, tests, examples and benchmarks: a line that runs `serve` (`"serve"`
/// as an argument, or `" serve` after a quoted binary in a shell line), or that starts the
/// service in-process (`Running::spawn(`, `the_eye::serve(`).
#[test]
fn every_suite_that_starts_serve_gives_it_free_ports_for_both_addresses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "scripts",
        "tests/it",
        "python/the-eye-client/tests",
        "bench/src",
        "examples",
        "benches",
    ] {
        let mut pending = vec![root.join(dir)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    files.push(path);
                }
            }
        }
    }
    let mut starters = Vec::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let starts_serve = text.lines().any(|line| {
            let line = line.trim_start();
            !line.starts_with("//")
                && !line.starts_with('#')
                && (line.contains("Running::spawn(")
                    || line.contains("the_eye::serve(")
                    || line.contains("\"serve\"")
                    || line.contains("\" serve ")
                    || line.contains("\" serve\"")
                    || line.ends_with("\" serve"))
        });
        if !starts_serve {
            continue;
        }
        let name = path.strip_prefix(root).unwrap().display().to_string();
        let lower = text.to_lowercase();
        // `common::test_config` gives both addresses port 0.
        let from_test_config = text.contains("test_config(");
        assert!(
            from_test_config
                || lower.contains("metrics_listen_addr")
                    && lower
                        .replace("metrics_listen_addr", "")
                        .contains("listen_addr"),
            "{name} starts `serve` without setting both server.listen_addr and \
             server.metrics_listen_addr"
        );
        // The fixed defaults, as a value (this file names them only in prose).
        for port in [8000, 9464] {
            for host in ["127.0.0.1", "0.0.0.0"] {
                let fixed = format!("{host}:{port}");
                assert!(!text.contains(&fixed), "{name} starts `serve` on {fixed}");
            }
        }
        starters.push(name);
    }
    for expected in [
        "scripts/schemathesis",
        "scripts/e2e-browser",
        "scripts/smoke-docs",
        "scripts/bench-ingest",
        "python/the-eye-client/tests/service.py",
        "tests/it/spool.rs",
    ] {
        assert!(
            starters.iter().any(|name| name == expected),
            "{expected} not recognised as starting serve: {starters:?}"
        );
    }
}

//! The development ClickHouse: starts and stops `clickhouse/devserver/run.sh`.
//!
//! Machines that build and test The Eye have no Docker and no recent ClickHouse package, so
//! `clickhouse/devserver/` holds a small Python server that embeds the real ClickHouse
//! engine (chDB) behind ClickHouse's HTTP interface. [`DevServer`] runs it as a child
//! process on `127.0.0.1` and a free port, with its data in a directory of the caller's
//! choosing, and stops it again when dropped. It is for development and tests only;
//! production runs the official ClickHouse server.
//!
//! The child's stdout and stderr go to `<data_dir>/devserver.log` (appended), which is the
//! place to look when it fails to start or a query misbehaves. The child is started with
//! `--exit-with-parent`, so it also goes away if this process dies without dropping it.
//!
//! One devserver owns a data directory (the server takes `<data_dir>/devserver.lock`). So
//! that a second process (the CLI beside a running `serve`) can use it rather than fail,
//! the owner publishes its address and password in `<data_dir>/devserver.json` (mode 0600)
//! once it answers, and removes it when it stops; [`DevServer::running`] finds it again.
//!
//! The server requires a password for every query (user `default`): it generates one into
//! `<data_dir>/password` (0600) at its first start and keeps it, so that no other local
//! user can read or write the development data, e.g. insert an organisation admin key's
//! row (issue 28). [`DevServer::password`] has it; `/ping` needs none.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The exit code with which `server.py` says it could not listen on its port: another
/// process took the port between our probe and its bind, so a second try makes sense.
const EXIT_CANNOT_LISTEN: i32 = 2;
/// How long [`DevServer::stop`] waits after SIGTERM before it kills the server.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// The exit code with which `server.py` says another devserver holds the data directory.
const EXIT_IN_USE: i32 = 3;
/// Where the devserver owning a data directory publishes its address, in that directory.
const ADDRESS_FILE: &str = "devserver.json";
/// The lock file `server.py` holds (flock) while it owns the data directory.
const LOCK_FILE: &str = "devserver.lock";
/// The file `server.py` generates the password of the user `default` into, 0600.
const PASSWORD_FILE: &str = "password";
/// The only user the devserver has.
pub const USER: &str = "default";

/// A running devserver; stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
pub struct DevServer {
    child: Option<Child>,
    url: String,
    log_path: PathBuf,
    /// What it was started with, for [`DevServer::restart`].
    script: PathBuf,
    data_dir: PathBuf,
    port: u16,
    /// The password of the user `default`, read from `<data_dir>/password` once it answers.
    password: crate::config::Secret,
}

/// A running devserver as its owner published it in `<data_dir>/devserver.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The password of the user `default` ([`USER`]).
    pub password: crate::config::Secret,
}

/// Why the devserver could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    #[error("devserver script {0} does not exist")]
    ScriptMissing(PathBuf),
    #[error("cannot prepare the devserver data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot find a free port for the devserver: {0}")]
    Port(io::Error),
    #[error("cannot run {script}: {source}")]
    Spawn { script: PathBuf, source: io::Error },
    #[error("devserver exited during start-up ({status}); see {}", log.display())]
    Exited { status: ExitStatus, log: PathBuf },
    #[error(
        "data directory {} is in use by another devserver ({}); the CLI's commands use one that \
         runs, but another `serve` needs a data directory of its own \
         (clickhouse.devserver_data_dir) or a ClickHouse at clickhouse.url",
        data_dir.display(),
        match published {
            Some(url) => format!("at {url}"),
            None => "still starting, or of an older version: it has not published its address".to_owned(),
        }
    )]
    InUse {
        data_dir: PathBuf,
        /// The URL it published, when it did.
        published: Option<String>,
    },
    #[error("cannot publish the devserver's address in {}: {source}", path.display())]
    Publish { path: PathBuf, source: io::Error },
    #[error("cannot read the devserver's password from {}: {source}", path.display())]
    Password { path: PathBuf, source: io::Error },
    #[error("devserver did not answer /ping within {timeout:?}; see {}", log.display())]
    Timeout { timeout: Duration, log: PathBuf },
}

impl DevServer {
    /// Starts `script` (normally [`DevServer::default_script`]) on 127.0.0.1 with a free port
    /// and its data in `data_dir`, and waits until `/ping` answers. The first run creates the
    /// server's Python virtualenv, which can take minutes: size `ready_timeout` for that.
    pub async fn start(
        script: &Path,
        data_dir: &Path,
        ready_timeout: Duration,
    ) -> Result<Self, DevServerError> {
        if !script.is_file() {
            return Err(DevServerError::ScriptMissing(script.to_path_buf()));
        }
        private_dir(data_dir).map_err(|source| DevServerError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let log_path = data_dir.join("devserver.log");
        let deadline = Instant::now() + ready_timeout;
        // The port is free when probed but another process may take it before the server
        // binds it; the server then exits with EXIT_CANNOT_LISTEN and we try once more.
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            let port = free_port().map_err(DevServerError::Port)?;
            let mut server = Self::spawn(script, data_dir, port, &log_path)?;
            match server.wait_ready(port, deadline, ready_timeout).await {
                Ok(()) => {
                    tracing::debug!(url = %server.url, log = %log_path.display(), "devserver is up");
                    server.read_password()?;
                    server.publish()?;
                    return Ok(server);
                }
                Err(DevServerError::Exited { status, .. })
                    if status.code() == Some(EXIT_IN_USE) =>
                {
                    return Err(DevServerError::InUse {
                        data_dir: data_dir.to_path_buf(),
                        published: Self::running(data_dir).await.map(|found| found.url),
                    });
                }
                Err(DevServerError::Exited { status, .. })
                    if status.code() == Some(EXIT_CANNOT_LISTEN) && attempts_left > 0 =>
                {
                    tracing::debug!(port, "devserver could not listen; retrying on another port");
                }
                Err(error) => return Err(error), // dropping `server` stops what is left of it
            }
        }
    }

    /// The URL and password of the devserver that owns `data_dir` and answers `/ping` now,
    /// as its owner published them in `<data_dir>/devserver.json`; `None` when no devserver
    /// runs there (a file left by one that was killed is ignored: nobody holds the data
    /// directory's lock).
    pub async fn running(data_dir: &Path) -> Option<Published> {
        let text = fs::read_to_string(data_dir.join(ADDRESS_FILE)).ok()?;
        let published: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = published["url"].as_str()?.to_owned();
        // One of an older version published no password: the server then had none either.
        let password =
            crate::config::Secret(published["password"].as_str().unwrap_or("").to_owned());
        let port = u16::try_from(published["port"].as_u64()?).ok()?;
        // flock, as server.py takes it. If we get the lock, its owner is gone: let it go at
        // once (a devserver starting this very moment then fails to start, as it would have
        // anyway beside ours).
        let lock = fs::File::open(data_dir.join(LOCK_FILE)).ok()?;
        match lock.try_lock() {
            Ok(()) => {
                let _ = lock.unlock();
                return None;
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(_)) => return None,
        }
        ping(port).await.then_some(Published { url, password })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The password of the user `default` ([`USER`]), which every query needs: what the
    /// server generated into `<data_dir>/password` at its first start.
    pub fn password(&self) -> &str {
        &self.password.0
    }

    /// The server process's id while it runs (its start script execs it), for tests that
    /// pause it (`SIGSTOP`) to make ClickHouse slow for real.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The file the server's output goes to (`<data_dir>/devserver.log`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `clickhouse/devserver/run.sh` in this source tree.
    pub fn default_script() -> PathBuf {
        crate::config::default_devserver_script()
    }

    /// Stops the server: SIGTERM (it finishes in-flight requests and closes the engine so
    /// the data is complete on disk), then SIGKILL if it is still there after 10 s.
    /// Blocks while it waits. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.unpublish();
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // `kill` the command rather than libc: no unsafe code and no extra dependency.
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if signalled {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            tracing::warn!(
                pid = child.id(),
                "devserver did not stop within {STOP_GRACE:?} of SIGTERM; killing it"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn spawn(
        script: &Path,
        data_dir: &Path,
        port: u16,
        log_path: &Path,
    ) -> Result<Self, DevServerError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|source| DevServerError::DataDir {
                path: log_path.to_path_buf(),
                source,
            })?;
        let log_for_stdout = log.try_clone().map_err(|source| DevServerError::DataDir {
            path: log_path.to_path_buf(),
            source,
        })?;
        // Through bash, so the script need not be executable; it execs the server, so the
        // child's PID is the server's and SIGTERM reaches it.
        let child = Command::new("bash")
            .arg(script)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--data")
            .arg(data_dir)
            .arg("--exit-with-parent")
            // Also catches this process dying before the server has even started.
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_for_stdout))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| DevServerError::Spawn {
                script: script.to_path_buf(),
                source,
            })?;
        Ok(Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log_path: log_path.to_path_buf(),
            script: script.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            port,
            password: crate::config::Secret::default(),
        })
    }

    /// Reads the password the server keeps in `<data_dir>/password` (it writes the file
    /// before it listens, so it is there once `/ping` answers).
    fn read_password(&mut self) -> Result<(), DevServerError> {
        let path = self.data_dir.join(PASSWORD_FILE);
        let text = fs::read_to_string(&path).map_err(|source| DevServerError::Password {
            path: path.clone(),
            source,
        })?;
        self.password = crate::config::Secret(text.trim().to_owned());
        Ok(())
    }

    /// Starts the server again on the same port and data directory (stopping it first if it
    /// runs), as an operator restarting ClickHouse would; waits until `/ping` answers.
    pub async fn restart(&mut self, ready_timeout: Duration) -> Result<(), DevServerError> {
        self.stop();
        let restarted = Self::spawn(&self.script, &self.data_dir, self.port, &self.log_path)?;
        self.child = restarted.into_child();
        self.wait_ready(self.port, Instant::now() + ready_timeout, ready_timeout)
            .await?;
        self.read_password()?;
        self.publish()
    }

    /// Writes `<data_dir>/devserver.json` (`{"url", "port", "pid", "password"}`) with mode 0600, whole
    /// or not at all (a temporary file renamed into place).
    fn publish(&self) -> Result<(), DevServerError> {
        let path = self.data_dir.join(ADDRESS_FILE);
        let failed = |source| DevServerError::Publish {
            path: path.clone(),
            source,
        };
        let contents = serde_json::json!({
            "url": self.url,
            "port": self.port,
            "pid": self.pid(),
            "password": self.password.0,
        });
        let temporary = self
            .data_dir
            .join(format!(".{ADDRESS_FILE}.{}", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || -> io::Result<()> {
            use std::io::Write;
            let mut file = options.open(&temporary)?;
            // The mode given to `open` does not apply to a file left by a crash.
            #[cfg(unix)]
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            file.write_all(format!("{contents}\n").as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &path)
        };
        write().map_err(|error| {
            let _ = fs::remove_file(&temporary);
            failed(error)
        })
    }

    /// Removes `<data_dir>/devserver.json` if it is still ours.
    fn unpublish(&self) {
        let path = self.data_dir.join(ADDRESS_FILE);
        let ours = fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|published| published["url"] == self.url.as_str());
        if ours {
            let _ = fs::remove_file(path);
        }
    }

    fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }

    /// Polls `/ping` until it answers, the child exits, or `deadline` passes.
    async fn wait_ready(
        &mut self,
        port: u16,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), DevServerError> {
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(DevServerError::Exited {
                        status,
                        log: self.log_path.clone(),
                    });
                }
            }
            if ping(port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DevServerError::Timeout {
                    timeout,
                    log: self.log_path.clone(),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
/// Creates `dir` (and its parents) and makes it `0700`, also when it existed with a wider
/// mode: it holds every application's events and keys' hashes, which no other local user
/// may read (issue 28).
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// One `GET /ping` over HTTP/1.0 (no client library needed): true if it answered `Ok.`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::with_capacity(256);
        // HTTP/1.0: the server closes the connection after the response.
        stream.take(4096).read_to_end(&mut response).await?;
        io::Result::Ok(response)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(response)) => {
            let text = String::from_utf8_lossy(&response);
            text.starts_with("HTTP/1.1 200") && text.ends_with("Ok.\n")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_script_is_in_the_source_tree() {
        assert!(DevServer::default_script().is_file());
    }

    #[tokio::test]
    async fn missing_script_is_reported() {
        let dir = std::env::temp_dir().join(format!("the-eye-devserver-{}", std::process::id()));
        let error = DevServer::start(
            Path::new("/nonexistent/run.sh"),
            &dir,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, DevServerError::ScriptMissing(_)), "{error}");
    }

    /// A `devserver.json` left by a devserver that was killed (nobody holds the lock), or one
    /// whose server does not answer, is not taken for a running devserver.
    #[tokio::test]
    async fn a_stale_published_address_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            DevServer::running(dir.path()).await,
            None,
            "nothing published"
        );
        let port = free_port().unwrap();
        fs::write(
            dir.path().join(ADDRESS_FILE),
            serde_json::json!({"url": format!("http://127.0.0.1:{port}"), "port": port})
                .to_string(),
        )
        .unwrap();
        let lock = fs::File::create(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(DevServer::running(dir.path()).await, None, "lock not held");
        // Held (as by a devserver), but nothing answers on the port.
        lock.lock().unwrap();
        assert_eq!(DevServer::running(dir.path()).await, None, "no answer");
        // `running` let go of nothing it did not take: the lock is still ours.
        let other = fs::File::open(dir.path().join(LOCK_FILE)).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
    }

    /// The data directory is 0700 after a start, whatever its mode before (issue 28).
    #[tokio::test]
    async fn the_data_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::tempdir().unwrap();
        let script = scratch.path().join("run.sh");
        fs::write(&script, "exit 1\n").unwrap();
        let data = scratch.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        let fresh = scratch.path().join("new/data");
        for dir in [&data, &fresh] {
            let error = DevServer::start(&script, dir, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(error, DevServerError::Exited { .. }), "{error}");
            let mode = fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ready() {
        let port = free_port().unwrap();
        assert!(!ping(port).await);
    }
}

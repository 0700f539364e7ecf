//! Logging set-up: `tracing` with a pretty or JSON formatter, filtered by configuration, and
//! every line passed through the key redaction ([`crate::redact::redact`]) on its way out.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ServerConfig};
use crate::redact;

/// Installs the global subscriber; `RUST_LOG`, when set, overrides `server.log_filter`.
pub fn init(config: &ServerConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_filter));
    // Logs go to stderr: stdout is for what commands print (`apps list`, new keys).
    // Colour codes only on a terminal: in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(Redacting(io::stderr));
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// A log writer that redacts API keys from whatever is written through it. Log lines quote
/// client input now and then (a refused row, a field name); whatever a line holds, no key
/// leaves the process through the log. The formatter writes each event in one call, so a key
/// is never split between two writes.
#[derive(Clone, Copy, Debug)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// One writer of [`Redacting`].
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        self.0.write_all(redact::redact(&text).as_bytes())?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

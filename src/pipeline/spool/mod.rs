//! The write-ahead spool (see [`writer`] while it is split along its seams).

mod writer;

pub use writer::*;

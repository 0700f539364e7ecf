//! The benchmark tools' shared parts: the realistic event bodies ([`events`]) that `eye-bench`
//! sends and `eye-instructions` counts, and the ceiling route ([`ceiling`]) that `eye-ceiling`
//! serves and `eye-instructions` counts next to The Eye's.

pub mod ceiling;
pub mod events;

//! The spool's on-disk format: segment headers, record frames and their payloads — how
//! they are laid out, encoded and decoded, byte for byte. Reading files is [`super::reader`]'s.
//!
//! # Format (version 3; version 2 rows had no `user_id` and `retention_days`, version 1 `errors` rows no `recoverable`)
//!
//! A spool directory holds numbered segment files `00000000000000000001.seg`, … and a lock
//! file. A segment starts with a 64-byte header — `EYESPOOL`, the format version (u32), a
//! CRC-32 of the rest of the header, the spool id (16 bytes), the segment's sequence number
//! (u64), the next row position of each lane (u64 `events`, u64 `errors`), its creation time
//! (u64 Unix ms) — followed by records. A record is `EYER`, the payload length (u32), the
//! CRC-32 of the payload (u32), then the payload: a kind byte and a lane byte, then for
//! *rows* the first position (u64) and the row count (u32) followed by the rows (postcard),
//! for *seal* and *confirm* the first and last positions (u64 each) of a batch. Integers are
//! little-endian. Positions count the rows of one lane, from 0, for the life of a spool id;
//! they never repeat, so `(spool id, lane, first, last)` names one ClickHouse block for ever.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::{Lane, SpoolError};

/// The version written into every segment header; a spool of another version is refused
/// with a message rather than misread.
pub const FORMAT_VERSION: u32 = 3;
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"EYESPOOL";
/// Bytes of a segment header; records start here.
pub const HEADER_BYTES: u64 = 64;
pub(super) const RECORD_MAGIC: [u8; 4] = *b"EYER";
/// Magic, length, checksum.
pub(super) const FRAME_BYTES: usize = 12;
/// Kind, lane, first position, count: the bytes before a rows record's rows.
pub(super) const ROWS_PREFIX_BYTES: usize = 14;
/// A length beyond this is corruption, not a record: the largest request (1,000 events of
/// 64 KiB plus error rows) is far below it.
pub(super) const MAX_RECORD_BYTES: u32 = 512 * 1024 * 1024;

pub(super) const KIND_ROWS: u8 = 1;
pub(super) const KIND_SEAL: u8 = 2;
pub(super) const KIND_CONFIRM: u8 = 3;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `count` rows of `lane` at positions `first..first + count`; the rows are the payload
    /// from [`ROWS_PREFIX_BYTES`] on.
    Rows { lane: Lane, first: u64, count: u32 },
    /// A batch of `lane` with rows `first..=last` is about to be inserted.
    Seal { lane: Lane, first: u64, last: u64 },
    /// ClickHouse has every row of that batch (or refused some for good).
    Confirm { lane: Lane, first: u64, last: u64 },
}

/// A rows record ready to append: the frame with its positions and checksum still blank.
pub struct RowsFrame {
    pub(super) lane: Lane,
    pub(super) count: u32,
    pub(super) bytes: Vec<u8>,
}

impl RowsFrame {
    /// Starts a frame for `count` rows of `lane`; the caller appends the encoded rows to
    /// [`RowsFrame::body`].
    pub fn new(lane: Lane, count: u32) -> Self {
        let mut bytes = Vec::with_capacity(FRAME_BYTES + ROWS_PREFIX_BYTES + 256 * count as usize);
        bytes.extend_from_slice(&RECORD_MAGIC);
        bytes.extend_from_slice(&[0; 8]);
        bytes.push(KIND_ROWS);
        bytes.push(lane.index() as u8);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&count.to_le_bytes());
        Self { lane, count, bytes }
    }

    /// The buffer the rows are encoded onto.
    pub fn body(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Bytes this frame occupies on disk.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The payload (kind, lane, positions, rows) as it will be written.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[FRAME_BYTES..]
    }

    /// Fills in the first position, length and checksum.
    pub(super) fn finish(&mut self, first: u64) {
        let payload_len = (self.bytes.len() - FRAME_BYTES) as u32;
        self.bytes[FRAME_BYTES + 2..FRAME_BYTES + 10].copy_from_slice(&first.to_le_bytes());
        self.bytes[4..8].copy_from_slice(&payload_len.to_le_bytes());
        let crc = crc32fast::hash(&self.bytes[FRAME_BYTES..]);
        self.bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The rows of a rows record's payload.
pub fn rows_body(payload: &[u8]) -> &[u8] {
    &payload[ROWS_PREFIX_BYTES.min(payload.len())..]
}

pub(super) fn control_frame(kind: u8, lane: Lane, first: u64, last: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(18);
    payload.push(kind);
    payload.push(lane.index() as u8);
    payload.extend_from_slice(&first.to_le_bytes());
    payload.extend_from_slice(&last.to_le_bytes());
    frame(&payload)
}

pub(super) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_BYTES + payload.len());
    bytes.extend_from_slice(&RECORD_MAGIC);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub(super) fn decode_payload(payload: &[u8]) -> Option<Record> {
    let kind = *payload.first()?;
    let lane = Lane::from_byte(*payload.get(1)?)?;
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    match kind {
        KIND_ROWS => {
            let count = u32::from_le_bytes(payload.get(10..14)?.try_into().ok()?);
            Some(Record::Rows {
                lane,
                first: u64_at(2)?,
                count,
            })
        }
        KIND_SEAL | KIND_CONFIRM if payload.len() == 18 => {
            let (first, last) = (u64_at(2)?, u64_at(10)?);
            Some(if kind == KIND_SEAL {
                Record::Seal { lane, first, last }
            } else {
                Record::Confirm { lane, first, last }
            })
        }
        _ => None,
    }
}

/// A segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) spool_id: Uuid,
    pub(super) segment: u64,
    pub(super) next_positions: [u64; 2],
    pub(super) created_unix_ms: u64,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut bytes = [0u8; HEADER_BYTES as usize];
        bytes[..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..32].copy_from_slice(self.spool_id.as_bytes());
        bytes[32..40].copy_from_slice(&self.segment.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.next_positions[0].to_le_bytes());
        bytes[48..56].copy_from_slice(&self.next_positions[1].to_le_bytes());
        bytes[56..64].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Option<Self>, SpoolError> {
        if bytes.len() < HEADER_BYTES as usize || bytes[..8] != SEGMENT_MAGIC {
            return Ok(None);
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
        if crc32fast::hash(&bytes[16..HEADER_BYTES as usize]) != crc {
            return Ok(None);
        }
        if version != FORMAT_VERSION {
            return Err(SpoolError::Version {
                path: path.to_owned(),
                found: version,
            });
        }
        Ok(Some(Self {
            spool_id: Uuid::from_slice(&bytes[16..32]).unwrap_or_default(),
            segment: u64_at(32),
            next_positions: [u64_at(40), u64_at(48)],
            created_unix_ms: u64_at(56),
        }))
    }
}

pub(super) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

pub(super) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_header_round_trips_and_a_changed_byte_is_refused() {
        let header = Header {
            spool_id: Uuid::now_v7(),
            segment: 7,
            next_positions: [10, 20],
            created_unix_ms: 1234,
        };
        let path = Path::new("x.seg");
        let mut bytes = header.encode();
        assert_eq!(Header::decode(path, &bytes).unwrap(), Some(header));
        bytes[40] ^= 1;
        assert_eq!(Header::decode(path, &bytes).unwrap(), None);
    }

    #[test]
    fn another_format_version_is_refused_by_name() {
        let mut bytes = Header {
            spool_id: Uuid::now_v7(),
            segment: 1,
            next_positions: [0, 0],
            created_unix_ms: 0,
        }
        .encode();
        let other = FORMAT_VERSION + 1;
        bytes[8..12].copy_from_slice(&other.to_le_bytes());
        let crc = crc32fast::hash(&bytes[16..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        let error = Header::decode(Path::new("x.seg"), &bytes).unwrap_err();
        assert!(
            error.to_string().contains(&format!("version {other}")),
            "{error}"
        );
    }
}

//! Reading a segment back: the records from an offset up to where the writer has published,
//! in order, skipping corrupt or torn stretches up to the next valid record, and telling what
//! rows a damaged rows record held when its frame still says so. The feeders and the
//! recovery scan read through it; it never writes.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{
    decode_payload, FRAME_BYTES, KIND_ROWS, MAX_RECORD_BYTES, RECORD_MAGIC, ROWS_PREFIX_BYTES,
};
use super::{Cursor, Lane, Record};

/// What reading at an offset found.
enum Frame {
    /// A valid record and the payload; the next record starts `FRAME_BYTES + len` further.
    Record(Record, Vec<u8>),
    /// Nothing more before `end`.
    End,
    /// Bytes that are not a valid record (a torn write or corruption).
    Corrupt,
}

fn read_frame(reader: &mut BufReader<File>, at: u64, end: u64) -> io::Result<Frame> {
    if at + FRAME_BYTES as u64 > end {
        return Ok(if at >= end {
            Frame::End
        } else {
            Frame::Corrupt
        });
    }
    let mut head = [0u8; FRAME_BYTES];
    reader.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
    if head[..4] != RECORD_MAGIC
        || len > MAX_RECORD_BYTES
        || at + FRAME_BYTES as u64 + u64::from(len) > end
    {
        return Ok(Frame::Corrupt);
    }
    let crc = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
    let mut payload = vec![0; len as usize];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Frame::Corrupt);
    }
    Ok(match decode_payload(&payload) {
        Some(record) => Frame::Record(record, payload),
        None => Frame::Corrupt,
    })
}

/// Records read from one segment.
pub struct Chunk {
    /// Each record with where it starts and its payload.
    pub records: Vec<(Cursor, Record, Vec<u8>)>,
    /// Where reading stopped: the next record, or `end`.
    pub next: u64,
    /// Offsets at which corruption was found and skipped.
    pub corrupt: Vec<u64>,
    /// Of those, the ones that start with a readable rows-record frame: what they say they
    /// held (see [`CorruptRows`]).
    pub corrupt_rows: Vec<CorruptRows>,
}

/// The rows a corrupt or torn rows record says it held: its magic, a plausible length and the
/// first 14 bytes of its payload (kind, lane, first position, count) were
/// readable, but the checksum failed or the record was cut short. The count is the record's
/// own word, which the checksum no longer vouches for; it is taken only when it is at least
/// one and at most the bytes left for rows (a row never takes less than a byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptRows {
    pub offset: u64,
    pub lane: Lane,
    pub first: u64,
    pub count: u32,
    /// The bytes the frame says the record takes.
    pub bytes: u64,
}

/// Reads what the frame at `at` says it holds, if it is a rows record's (see [`CorruptRows`]).
fn salvage_rows(
    reader: &mut BufReader<File>,
    at: u64,
    end: u64,
) -> io::Result<Option<CorruptRows>> {
    let mut bytes = [0u8; FRAME_BYTES + ROWS_PREFIX_BYTES];
    if at + bytes.len() as u64 > end {
        return Ok(None);
    }
    reader.seek(SeekFrom::Start(at))?;
    reader.read_exact(&mut bytes)?;
    Ok(salvage(at, &bytes))
}

pub(super) fn salvage(
    offset: u64,
    bytes: &[u8; FRAME_BYTES + ROWS_PREFIX_BYTES],
) -> Option<CorruptRows> {
    if bytes[..4] != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().ok()?);
    if len > MAX_RECORD_BYTES || (len as usize) < ROWS_PREFIX_BYTES {
        return None;
    }
    let payload = &bytes[FRAME_BYTES..];
    if payload[0] != KIND_ROWS {
        return None;
    }
    let lane = Lane::from_byte(payload[1])?;
    let first = u64::from_le_bytes(payload[2..10].try_into().ok()?);
    let count = u32::from_le_bytes(payload[10..14].try_into().ok()?);
    if count == 0 || count > len - ROWS_PREFIX_BYTES as u32 {
        return None;
    }
    Some(CorruptRows {
        offset,
        lane,
        first,
        count,
        bytes: FRAME_BYTES as u64 + u64::from(len),
    })
}

/// Reads the records of segment `segment` (file `path`) from `from` up to `end`, stopping
/// once `budget` payload bytes were read. Corrupt bytes are skipped up to the next valid
/// record (found by its magic, length and checksum), so one bad record costs only itself.
pub fn read_chunk(
    path: &Path,
    segment: u64,
    from: u64,
    end: u64,
    budget: usize,
) -> io::Result<Chunk> {
    let mut chunk = Chunk {
        records: Vec::new(),
        next: from,
        corrupt: Vec::new(),
        corrupt_rows: Vec::new(),
    };
    if from >= end {
        // Nothing to read; the file need not exist (a segment not yet created, or deleted).
        return Ok(chunk);
    }
    let file = File::open(path)?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    reader.seek(SeekFrom::Start(from))?;
    let mut read = 0usize;
    let mut at = from;
    while read < budget {
        match read_frame(&mut reader, at, end)? {
            Frame::End => break,
            Frame::Record(record, payload) => {
                read += payload.len() + FRAME_BYTES;
                let cursor = Cursor {
                    segment,
                    offset: at,
                };
                at += (FRAME_BYTES + payload.len()) as u64;
                chunk.records.push((cursor, record, payload));
            }
            Frame::Corrupt => {
                chunk.corrupt.push(at);
                let found = salvage_rows(&mut reader, at, end)?;
                let mut skipped = found.map_or(at + 1, |found| at + found.bytes);
                chunk.corrupt_rows.extend(found);
                let (next, within) = resync(&mut reader, at + 1, end, skipped)?;
                for found in within {
                    // Another spoiled record in the same stretch, past the one before it.
                    if found.offset >= skipped {
                        skipped = found.offset + found.bytes;
                        chunk.corrupt.push(found.offset);
                        chunk.corrupt_rows.push(found);
                    }
                }
                at = next;
                reader.seek(SeekFrom::Start(at))?;
            }
        }
    }
    chunk.next = at;
    Ok(chunk)
}

/// The offset of the next valid record at or after `from`, or `end`; and the rows records
/// passed on the way whose frames are readable (see [`CorruptRows`]) and start at or after
/// `salvage_from`.
fn resync(
    reader: &mut BufReader<File>,
    from: u64,
    end: u64,
    salvage_from: u64,
) -> io::Result<(u64, Vec<CorruptRows>)> {
    let mut salvaged = Vec::new();
    reader.seek(SeekFrom::Start(from))?;
    let mut rest = Vec::new();
    reader
        .by_ref()
        .take(end.saturating_sub(from))
        .read_to_end(&mut rest)?;
    let mut start = 0;
    while let Some(found) = rest[start..]
        .windows(RECORD_MAGIC.len())
        .position(|window| window == RECORD_MAGIC)
    {
        let offset = start + found;
        let candidate = from + offset as u64;
        reader.seek(SeekFrom::Start(candidate))?;
        if let Frame::Record(..) = read_frame(reader, candidate, end)? {
            return Ok((candidate, salvaged));
        }
        let frame = rest
            .get(offset..offset + FRAME_BYTES + ROWS_PREFIX_BYTES)
            .and_then(|bytes| bytes.try_into().ok());
        if let Some(found) = frame.and_then(|frame| salvage(candidate, frame)) {
            if candidate >= salvage_from {
                salvaged.push(found);
            }
        }
        start = offset + 1;
    }
    Ok((end, salvaged))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::pipeline::spool::format::{control_frame, HEADER_BYTES, KIND_CONFIRM, KIND_SEAL};
    use crate::pipeline::spool::rows_body;
    use crate::pipeline::spool::testing::{rows, write_segment};

    #[test]
    fn records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            rows(Lane::Events, 0, 2, b"ab"),
            control_frame(KIND_SEAL, Lane::Events, 0, 1),
            rows(Lane::Errors, 5, 1, b"c"),
            control_frame(KIND_CONFIRM, Lane::Events, 0, 1),
        ];
        let path = write_segment(dir.path(), &records);
        let end = fs::metadata(&path).unwrap().len();
        let chunk = read_chunk(&path, 1, HEADER_BYTES, end, usize::MAX).unwrap();
        let found: Vec<Record> = chunk.records.iter().map(|(_, r, _)| r.clone()).collect();
        assert_eq!(
            found,
            vec![
                Record::Rows {
                    lane: Lane::Events,
                    first: 0,
                    count: 2
                },
                Record::Seal {
                    lane: Lane::Events,
                    first: 0,
                    last: 1
                },
                Record::Rows {
                    lane: Lane::Errors,
                    first: 5,
                    count: 1
                },
                Record::Confirm {
                    lane: Lane::Events,
                    first: 0,
                    last: 1
                },
            ]
        );
        assert_eq!(rows_body(&chunk.records[0].2), b"ab");
        assert_eq!(chunk.next, end);
        assert!(chunk.corrupt.is_empty());
    }

    #[test]
    fn a_flipped_byte_costs_only_its_record_and_a_torn_tail_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5u64)
            .map(|i| rows(Lane::Events, i * 3, 3, &[i as u8; 40]))
            .collect();
        let path = write_segment(dir.path(), &records);
        let mut bytes = fs::read(&path).unwrap();
        let second = HEADER_BYTES as usize + records[0].len();
        bytes[second + FRAME_BYTES + 20] ^= 0x40;
        // Tear the last record in the middle.
        let torn = bytes.len() - 10;
        bytes.truncate(torn);
        fs::write(&path, &bytes).unwrap();
        let chunk = read_chunk(&path, 1, HEADER_BYTES, torn as u64, usize::MAX).unwrap();
        let firsts: Vec<u64> = chunk
            .records
            .iter()
            .map(|(_, record, _)| match record {
                Record::Rows { first, .. } => *first,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(firsts, vec![0, 6, 9]);
        assert_eq!(chunk.corrupt.len(), 2, "{:?}", chunk.corrupt);
        assert_eq!(chunk.corrupt[0], second as u64);
        assert_eq!(chunk.next, torn as u64);
    }

    #[test]
    fn a_torn_or_spoiled_rows_record_still_tells_its_rows_when_its_frame_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            rows(Lane::Events, 0, 3, &[1; 60]),
            rows(Lane::Errors, 7, 2, &[2; 60]),
            rows(Lane::Events, 3, 4, &[3; 80]),
        ];
        let path = write_segment(dir.path(), &records);
        let mut bytes = fs::read(&path).unwrap();
        // Spoil the first record's rows, and cut the last one after its count.
        bytes[HEADER_BYTES as usize + FRAME_BYTES + ROWS_PREFIX_BYTES + 5] ^= 1;
        let last = bytes.len() - records[2].len();
        let cut = last + FRAME_BYTES + ROWS_PREFIX_BYTES + 10;
        bytes.truncate(cut);
        fs::write(&path, &bytes).unwrap();
        let chunk = read_chunk(&path, 1, HEADER_BYTES, cut as u64, usize::MAX).unwrap();
        assert_eq!(chunk.records.len(), 1);
        assert_eq!(
            chunk.corrupt_rows,
            vec![
                CorruptRows {
                    offset: HEADER_BYTES,
                    lane: Lane::Events,
                    first: 0,
                    count: 3,
                    bytes: records[0].len() as u64,
                },
                CorruptRows {
                    offset: last as u64,
                    lane: Lane::Events,
                    first: 3,
                    count: 4,
                    bytes: records[2].len() as u64,
                },
            ]
        );
        // Cut inside the frame's first 26 bytes: a corrupt record whose rows cannot be told.
        let cut = last + FRAME_BYTES + 4;
        bytes.truncate(cut);
        fs::write(&path, &bytes).unwrap();
        let chunk = read_chunk(&path, 1, HEADER_BYTES, cut as u64, usize::MAX).unwrap();
        assert_eq!(chunk.corrupt.len(), 2);
        assert_eq!(chunk.corrupt_rows.len(), 1);
        // A count larger than the bytes left for rows is not believed.
        let mut frame = [0u8; FRAME_BYTES + ROWS_PREFIX_BYTES];
        frame.copy_from_slice(&records[0][..FRAME_BYTES + ROWS_PREFIX_BYTES]);
        frame[FRAME_BYTES + 10..FRAME_BYTES + 14].copy_from_slice(&61u32.to_le_bytes());
        assert_eq!(salvage(0, &frame), None);
        frame[FRAME_BYTES + 10..FRAME_BYTES + 14].copy_from_slice(&60u32.to_le_bytes());
        assert_eq!(salvage(0, &frame).map(|found| found.count), Some(60));
    }

    #[test]
    fn a_budget_stops_reading_at_a_record_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..4u64)
            .map(|i| rows(Lane::Events, i, 1, &[0; 100]))
            .collect();
        let path = write_segment(dir.path(), &records);
        let end = fs::metadata(&path).unwrap().len();
        let chunk = read_chunk(&path, 1, HEADER_BYTES, end, 150).unwrap();
        assert_eq!(chunk.records.len(), 2);
        assert_eq!(chunk.next, HEADER_BYTES + 2 * records[0].len() as u64);
    }
}

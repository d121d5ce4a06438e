//! A read-only look at sled 0.34's own files before sled is started on them.
//!
//! sled does not refuse damaged files; it repairs them by rewriting. Measured with 0.34.7:
//! a `conf` of 8 bytes or fewer, or a missing one, is silently rewritten; a `db` log in which
//! no segment header checks out (garbage, zeros, truncated to a few bytes) opens as an *empty*
//! database and is overwritten; a missing `db` or `blobs/` is created afresh. An archive must
//! never be "repaired" into an empty one, so these checks run first and touch nothing.
//!
//! The formats checked are sled 0.34's (frozen: 0.34.7 is the last 0.34 release):
//! `conf` is text lines (`segment_size: 524288`, ...) followed by the little-endian CRC-32 of
//! that text; `db` is a log of `segment_size`-byte segments, each opening with a 20-byte
//! header `[crc, lsn, max_stable_lsn]` whose first four bytes are the little-endian CRC-32
//! of the other sixteen, xor `0xFFFF_FFFF`. A log with at least one valid header is one sled
//! recovers (a torn tail is what a crash leaves; sled handles that itself).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes of a sled 0.34 segment header.
const SEGMENT_HEADER_BYTES: u64 = 20;

/// What is wrong with sled's files, or why they could not be read.
pub(super) enum Problem {
    Damaged(String),
    Unreadable {
        file: &'static str,
        error: io::Error,
    },
}

/// Checks sled's `conf`, `db` and `blobs/` in an existing archive directory.
pub(super) fn check(dir: &Path) -> Result<(), Problem> {
    let segment_size = check_conf(dir)?;
    check_log(dir, segment_size)?;
    if !dir.join("blobs").is_dir() {
        return Err(Problem::Damaged("sled's blobs directory is missing".into()));
    }
    Ok(())
}

/// Validates `conf` and returns its segment size in bytes.
fn check_conf(dir: &Path) -> Result<u64, Problem> {
    let bytes = match std::fs::read(dir.join("conf")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Problem::Damaged("sled's conf file is missing".into()))
        }
        Err(error) => {
            return Err(Problem::Unreadable {
                file: "conf",
                error,
            })
        }
    };
    if bytes.len() <= 8 {
        return Err(Problem::Damaged("sled's conf file is truncated".into()));
    }
    let (text, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(text).to_le_bytes() != crc {
        return Err(Problem::Damaged(
            "sled's conf file fails its checksum".into(),
        ));
    }
    let segment_size = std::str::from_utf8(text)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("segment_size: "))
        })
        .and_then(|value| value.trim().parse::<u64>().ok())
        .filter(|&size| size.is_power_of_two() && (256..=1 << 24).contains(&size));
    segment_size
        .ok_or_else(|| Problem::Damaged("sled's conf file names no valid segment size".into()))
}

/// Requires at least one valid segment header in `db`.
fn check_log(dir: &Path, segment_size: u64) -> Result<(), Problem> {
    let unreadable = |error| Problem::Unreadable { file: "db", error };
    let mut file = match File::open(dir.join("db")) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Problem::Damaged("sled's db file is missing".into()))
        }
        Err(error) => return Err(unreadable(error)),
    };
    let len = file.metadata().map_err(unreadable)?.len();
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    let mut offset = 0;
    while offset + SEGMENT_HEADER_BYTES <= len {
        file.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
        file.read_exact(&mut header).map_err(unreadable)?;
        if segment_header_is_valid(&header) {
            return Ok(());
        }
        offset += segment_size;
    }
    Err(Problem::Damaged(
        "sled's db file holds no readable log segment".into(),
    ))
}

fn segment_header_is_valid(header: &[u8; SEGMENT_HEADER_BYTES as usize]) -> bool {
    let (stored, covered) = header.split_at(4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    stored ^ 0xFFFF_FFFF == crc32fast::hash(covered)
}

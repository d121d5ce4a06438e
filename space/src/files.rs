//! Files a user names, read with a bound. A FIFO, a device (`/dev/zero`) or a directory is
//! refused before it is opened for reading, and a regular file is read through a byte limit,
//! so no path a user gives can make genas wait forever or allocate without end.

use std::io::Read;
use std::path::Path;

/// Why a user-named file was not read. `Display` is the reason alone; callers name the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The path is missing or cannot be opened.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The path is a FIFO, a device, a socket or a directory.
    #[error("not a regular file")]
    NotAFile,
    /// The file holds more than the reader takes.
    #[error("larger than the {limit} bytes genas reads here")]
    TooLarge { limit: u64 },
}

/// The bytes of the regular file `path`, at most `limit` of them.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    // Sized once from the file's length, as `fs::read` does: no doubling while it is read.
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize + 1);
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|e| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e})"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_fifos_are_refused_and_files_are_read_within_their_limit() {
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 10),
            Err(ReadError::NotAFile)
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_bounded(dir.path(), 10),
            Err(ReadError::NotAFile)
        ));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Opening a FIFO for reading would block until a writer comes: refused first.
            assert!(matches!(read_bounded(&fifo, 10), Err(ReadError::NotAFile)));
        }
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_bounded(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_bounded(&file, 9),
            Err(ReadError::TooLarge { limit: 9 })
        ));
        assert!(matches!(
            read_bounded(&dir.path().join("absent"), 9),
            Err(ReadError::Io(_))
        ));
    }
}

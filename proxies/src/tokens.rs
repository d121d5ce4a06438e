//! Token streams as data sets hold them: in memory (u32), or in a memory-mapped token file
//! (u16 where the vocabulary fits, u32 otherwise) written once and atomically; and views of a
//! stream as a list of its ranges, so the training and validation splits of a corpus never
//! copy it.
//!
//! It knows nothing of corpora, tokenizers, splits or models.

use memmap2::Mmap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"genastk2";
/// magic, width (u32), reserved (u32), tokens (u64), characters (u64).
const HEADER: usize = 32;
/// Tokens decoded at a time when a mapped stream is scanned.
const SCAN: usize = 1 << 16;

/// Writes a token file: through a temporary file renamed into place when whole, or an
/// anonymous file that disappears with its mapping.
pub struct TokenWriter {
    /// Taken by `finish`.
    out: Option<BufWriter<File>>,
    width: usize,
    vocab: u32,
    count: u64,
    chars: u64,
    /// (temporary, final) paths of a named file.
    paths: Option<(PathBuf, PathBuf)>,
}

impl TokenWriter {
    /// A writer of ids below `vocab` to `dest` (none: an unnamed temporary file).
    pub fn create(vocab: u32, dest: Option<&Path>) -> std::io::Result<TokenWriter> {
        let (file, paths) = match dest {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = path.with_extension(format!("tokens.{}.tmp", std::process::id()));
                // Read as well as written: the finished file is mapped through it.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)?;
                (file, Some((tmp, path.to_path_buf())))
            }
            None => (tempfile::tempfile()?, None),
        };
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER])?;
        Ok(TokenWriter {
            out: Some(out),
            width: if vocab <= 1 << 16 { 2 } else { 4 },
            vocab,
            count: 0,
            chars: 0,
            paths,
        })
    }

    /// Appends ids; one at or beyond the vocabulary is refused (and returned).
    pub fn push(&mut self, ids: &[u32]) -> Result<(), PushError> {
        if let Some(&t) = ids.iter().find(|&&t| t >= self.vocab) {
            return Err(PushError::Beyond(t));
        }
        let mut bytes = Vec::with_capacity(ids.len() * self.width);
        if self.width == 2 {
            bytes.extend(ids.iter().flat_map(|&t| (t as u16).to_le_bytes()));
        } else {
            bytes.extend(ids.iter().flat_map(|&t| t.to_le_bytes()));
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| PushError::Io(std::io::Error::other("the token file is finished")))?;
        out.write_all(&bytes).map_err(PushError::Io)?;
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Counts characters of the text the ids stand for (kept in the header).
    pub fn add_chars(&mut self, n: u64) {
        self.chars += n;
    }

    /// Writes the header, puts the file in place and maps it.
    pub fn finish(mut self) -> std::io::Result<TokenFile> {
        let out = self
            .out
            .take()
            .ok_or_else(|| std::io::Error::other("the token file is finished"))?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header(self.width, self.count, self.chars))?;
        file.sync_data()?;
        if let Some((tmp, path)) = &self.paths {
            std::fs::rename(tmp, path)?;
        }
        // Every id was checked below the vocabulary as it was pushed: not scanned again.
        TokenFile::map(file, None)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl Drop for TokenWriter {
    fn drop(&mut self) {
        // A writer dropped before `finish` leaves no temporary file behind; after a rename
        // the temporary path no longer exists.
        if let Some((tmp, _)) = &self.paths {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Why ids could not be written.
#[derive(Debug)]
pub enum PushError {
    /// An id at or beyond the vocabulary.
    Beyond(u32),
    Io(std::io::Error),
}

fn header(width: usize, count: u64, chars: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&(width as u32).to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..32].copy_from_slice(&chars.to_le_bytes());
    h
}

/// A mapped token file.
#[derive(Debug)]
pub struct TokenFile {
    map: Mmap,
    width: usize,
    count: usize,
    chars: u64,
}

impl TokenFile {
    /// The token file at `path` if it is whole and every id is below `vocab`; why not
    /// otherwise (a cache that fails is written again).
    pub fn open(path: &Path, vocab: u32) -> Result<TokenFile, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        TokenFile::map(file, Some(vocab))
    }

    /// Maps a token file whose header is checked, and, given a vocabulary, every id.
    fn map(file: File, vocab: Option<u32>) -> Result<TokenFile, String> {
        // SAFETY: token files are written once through a temporary file and a rename, and
        // never changed in place; a mapping only ever sees a whole file.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| e.to_string())?;
        let head = map.get(..HEADER).ok_or("shorter than its header")?;
        if &head[..8] != MAGIC {
            return Err("not a genas token file".into());
        }
        let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or([0; 8]));
        let width = u32::from_le_bytes(head[8..12].try_into().unwrap_or([0; 4])) as usize;
        let (count, chars) = (word(16), word(24));
        if width != 2 && width != 4 {
            return Err(format!("a token width of {width} bytes"));
        }
        let body = (map.len() - HEADER) as u64;
        if count.checked_mul(width as u64) != Some(body) {
            return Err(format!(
                "{body} bytes hold no {count} tokens of {width} bytes"
            ));
        }
        let t = TokenFile {
            map,
            width,
            count: count as usize,
            chars,
        };
        // Every id is checked once (an id beyond the vocabulary would index past an
        // embedding), a block at a time, and the pages let go.
        let Some(vocab) = vocab else {
            return Ok(t);
        };
        let mut buf = Vec::with_capacity(SCAN);
        let mut at = 0;
        while at < t.count {
            let n = SCAN.min(t.count - at);
            buf.clear();
            t.decode(at, n, &mut buf);
            if let Some(&id) = buf.iter().find(|&&id| id >= vocab) {
                return Err(format!("token id {id} is beyond the vocabulary of {vocab}"));
            }
            t.release(at, n);
            at += n;
        }
        Ok(t)
    }

    /// Tokens in the file.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Characters of the text the tokens stand for.
    pub fn chars(&self) -> u64 {
        self.chars
    }

    /// Bytes a token takes: 2 or 4.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Appends tokens `at..at + n` to `out`.
    fn decode(&self, at: usize, n: usize, out: &mut Vec<u32>) {
        let bytes = &self.map[HEADER + at * self.width..HEADER + (at + n) * self.width];
        if self.width == 2 {
            out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]]))),
            );
        } else {
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
    }

    /// Lets this process's pages of tokens `at..at + n` go (they are read again from the
    /// file if needed), so scanning a stream does not hold it.
    fn release(&self, at: usize, n: usize) {
        release(
            &self.map,
            HEADER + at * self.width..HEADER + (at + n) * self.width,
        );
    }
}

/// Lets this process's whole pages within `range` of a read-only mapping go: they are read
/// from the file again if needed, so scanning a mapped file does not hold it.
pub(crate) fn release(map: &Mmap, range: std::ops::Range<usize>) {
    let page = 4096;
    let start = range.start.div_ceil(page) * page;
    let end = (range.end / page) * page;
    if end > start {
        // SAFETY: the mapping is read only and shared with its file: dropping pages only
        // means reading them from the file again; the files genas maps are never changed in
        // place, so what is read again is what was there.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

/// Where a stream's tokens are.
enum Base {
    Owned(Vec<u32>),
    Mapped(TokenFile),
}

impl Base {
    fn len(&self) -> usize {
        match self {
            Base::Owned(v) => v.len(),
            Base::Mapped(f) => f.len(),
        }
    }
}

/// A range of the base within a view: view positions `at..at + len` are base positions
/// `from..from + len`.
#[derive(Clone, Copy, Debug)]
struct Range {
    at: usize,
    from: usize,
    len: usize,
}

/// A token stream, or a view of one as a list of its ranges. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    base: Arc<Base>,
    ranges: Arc<[Range]>,
    len: usize,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.base {
            Base::Owned(_) => "in memory".to_string(),
            Base::Mapped(t) => format!("mapped, {} bytes a token", t.width()),
        };
        write!(
            f,
            "Tokens({} tokens in {} ranges, {kind})",
            self.len,
            self.ranges.len()
        )
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Tokens) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl From<Vec<u32>> for Tokens {
    fn from(v: Vec<u32>) -> Tokens {
        Tokens::whole(Base::Owned(v))
    }
}

impl From<TokenFile> for Tokens {
    fn from(f: TokenFile) -> Tokens {
        Tokens::whole(Base::Mapped(f))
    }
}

impl Tokens {
    fn whole(base: Base) -> Tokens {
        let len = base.len();
        Tokens {
            base: Arc::new(base),
            ranges: Arc::from(vec![Range {
                at: 0,
                from: 0,
                len,
            }]),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the tokens are read from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(&*self.base, Base::Mapped(_))
    }

    /// Calls `f(base position, length)` for the base ranges that make view positions
    /// `start..start + n`, in order. Panics past the end (callers index within `len`).
    fn segments(&self, start: usize, n: usize, mut f: impl FnMut(usize, usize)) {
        assert!(
            start + n <= self.len,
            "tokens {start}..{} of {}",
            start + n,
            self.len
        );
        let mut i = self.ranges.partition_point(|r| r.at + r.len <= start);
        let (mut pos, mut left) = (start, n);
        while left > 0 {
            let r = self.ranges[i];
            let off = pos - r.at;
            let take = left.min(r.len - off);
            f(r.from + off, take);
            pos += take;
            left -= take;
            i += 1;
        }
    }

    /// Appends tokens `start..start + n` to `out`.
    pub fn extend_into(&self, start: usize, n: usize, out: &mut Vec<u32>) {
        self.segments(start, n, |from, len| match &*self.base {
            Base::Owned(v) => out.extend_from_slice(&v[from..from + len]),
            Base::Mapped(t) => t.decode(from, len, out),
        });
    }

    /// Tokens `start..start + n`, copied.
    pub fn slice(&self, start: usize, n: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(n);
        self.extend_into(start, n, &mut out);
        out
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> u32 {
        let mut at = 0;
        self.segments(i, 1, |from, _| at = from);
        match &*self.base {
            Base::Owned(v) => v[at],
            Base::Mapped(t) => {
                let b = &t.map[HEADER + at * t.width..HEADER + (at + 1) * t.width];
                b.iter()
                    .rev()
                    .fold(0, |x, &byte| (x << 8) | u32::from(byte))
            }
        }
    }

    /// Every token, copied.
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len);
        self.extend_into(0, self.len, &mut out);
        out
    }

    /// Calls `f` on consecutive blocks of at most `block` tokens, in order; a mapped stream's
    /// pages are let go as they are read.
    pub fn for_each_block(&self, block: usize, mut f: impl FnMut(&[u32])) {
        let block = block.max(1);
        let mut buf = Vec::with_capacity(block.min(self.len));
        let mut at = 0;
        while at < self.len {
            let n = block.min(self.len - at);
            buf.clear();
            self.extend_into(at, n, &mut buf);
            f(&buf);
            if let Base::Mapped(t) = &*self.base {
                self.segments(at, n, |from, len| t.release(from, len));
            }
            at += n;
        }
    }

    /// The tokens in order (a block decoded at a time).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let block = SCAN;
        (0..self.len.div_ceil(block)).flat_map(move |b| {
            let start = b * block;
            let mut buf = Vec::with_capacity(block);
            self.extend_into(start, block.min(self.len - start), &mut buf);
            buf.into_iter()
        })
    }

    /// The view of this stream's `(start, len)` ranges, in the order given (no copy).
    pub fn select(&self, parts: &[(usize, usize)]) -> Tokens {
        let mut ranges: Vec<Range> = Vec::new();
        let mut at = 0;
        for &(start, n) in parts {
            self.segments(start, n, |from, len| {
                match ranges.last_mut() {
                    // Adjacent in the base: one range.
                    Some(r) if r.from + r.len == from => r.len += len,
                    _ => ranges.push(Range { at, from, len }),
                }
                at += len;
            });
        }
        Tokens {
            base: self.base.clone(),
            ranges: Arc::from(ranges),
            len: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(ids: &[u32], vocab: u32) -> Tokens {
        let mut w = TokenWriter::create(vocab, None).unwrap();
        w.push(ids).unwrap();
        Tokens::from(w.finish().unwrap())
    }

    #[test]
    fn a_mapped_stream_reads_back_what_was_written_at_both_widths() {
        let ids: Vec<u32> = (0..200_000u32).map(|i| (i * 7919) % 50_000).collect();
        for vocab in [50_000, 70_000] {
            let t = mapped(&ids, vocab);
            assert_eq!(t.to_vec(), ids);
            assert_eq!(t.get(123_457), ids[123_457]);
            assert!(t.is_mapped());
        }
        let mut w = TokenWriter::create(100, None).unwrap();
        assert!(matches!(w.push(&[3, 100]), Err(PushError::Beyond(100))));
    }

    #[test]
    fn views_select_ranges_without_copying_and_read_across_them() {
        let ids: Vec<u32> = (0..1000).collect();
        for t in [Tokens::from(ids.clone()), mapped(&ids, 1000)] {
            let v = t.select(&[(10, 5), (15, 5), (500, 3), (0, 2)]);
            assert_eq!(v.ranges.len(), 3, "adjacent parts merge");
            let want: Vec<u32> = (10..20).chain(500..503).chain(0..2).collect();
            assert_eq!(v.to_vec(), want);
            let mut out = Vec::new();
            v.extend_into(8, 4, &mut out);
            assert_eq!(out, [18, 19, 500, 501]);
            // A view of a view.
            assert_eq!(v.select(&[(9, 3)]).to_vec(), [19, 500, 501]);
            let mut seen = Vec::new();
            v.for_each_block(4, |b| seen.extend_from_slice(b));
            assert_eq!(seen, want);
            assert_eq!(v.iter().collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn a_damaged_or_foreign_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tokens");
        let mut w = TokenWriter::create(300, Some(&path)).unwrap();
        w.push(&[1, 2, 299]).unwrap();
        w.add_chars(9);
        let f = w.finish().unwrap();
        assert_eq!((f.len(), f.chars(), f.width()), (3, 9, 2));
        assert!(TokenFile::open(&path, 300).is_ok());
        assert!(TokenFile::open(&path, 299).unwrap_err().contains("299"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(TokenFile::open(&path, 300).is_err());
        std::fs::write(&path, b"genastok whatever").unwrap();
        assert!(TokenFile::open(&path, 300).is_err());
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}

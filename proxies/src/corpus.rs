//! Text corpora read as a stream of documents, in bounded memory: a UTF-8 text file (one
//! document), a JSON Lines file (a document per record, in a named string field), a Parquet
//! file (a document per row of a named string column: the format Hugging Face datasets are
//! published in), or a folder of such files read in name order.
//!
//! It owns reading them, the one-line error of a data file ([`DataError`]) and the corpus
//! fingerprint, computed over the files' bytes as they stream. It knows nothing of tokens:
//! `tokenize` encodes what it reads and `data` cuts the token stream into splits.

use sha2::{Digest, Sha256};
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// Why a data file cannot be used. `Display` is one line naming the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
    /// Text or images that make no data set (too short, too few images), before a path is known.
    #[error("{0}")]
    Invalid(String),
}

/// A reason with no file to name: the corpus or images as given.
impl From<String> for DataError {
    fn from(why: String) -> DataError {
        DataError::Invalid(why)
    }
}

impl From<&str> for DataError {
    fn from(why: &str) -> DataError {
        DataError::Invalid(why.to_string())
    }
}

impl From<DataError> for String {
    fn from(e: DataError) -> String {
        e.to_string()
    }
}

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Bad {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The largest file genas reads whole (an IDX file, or a text file a character or byte
/// vocabulary is built from); streamed corpora have no such bound.
pub const MAX_DATA_FILE_BYTES: u64 = 16 << 30;

/// Bytes of a text file read at a time.
const BLOCK_BYTES: usize = 4 << 20;

/// The longest JSON Lines record read.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// What a corpus file holds, by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 text: the file is one document.
    Text,
    /// `.jsonl`: a JSON object per line, the document in its text field.
    JsonLines,
    /// `.parquet`: a row per document, in its text column.
    Parquet,
}

impl Format {
    fn of(path: &Path) -> Format {
        match path.extension().and_then(|x| x.to_str()) {
            Some("jsonl") => Format::JsonLines,
            Some("parquet") => Format::Parquet,
            _ => Format::Text,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::JsonLines => "jsonl",
            Format::Parquet => "parquet",
        }
    }
}

/// What [`Corpus::read`] hands over, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The next text of the current document (a document may come in many pieces).
    Text(&'a str),
    /// The current document ended (an empty record or row makes no document).
    End,
}

/// The files of a corpus, in reading order.
#[derive(Clone, Debug)]
pub struct Corpus {
    files: Vec<(PathBuf, Format, u64)>,
    field: String,
    /// Bytes of all its files, as stored (compressed, for Parquet).
    pub bytes: u64,
}

impl Corpus {
    /// The corpus at `path`: a file, or every `.txt`, `.jsonl` and `.parquet` file of a folder
    /// in name order; `field` names the text field of records and rows ("text" by default).
    pub fn open(path: &Path, field: Option<&str>) -> Result<Corpus, DataError> {
        let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| io(path, e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| x == "txt" || x == "jsonl" || x == "parquet")
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(bad(
                    path,
                    "the folder holds no .txt, .jsonl or .parquet files",
                ));
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut out = Vec::with_capacity(files.len());
        let mut bytes = 0u64;
        for f in files {
            let m = std::fs::metadata(&f).map_err(|e| io(&f, e))?;
            if !m.is_file() {
                return Err(bad(&f, "not a regular file"));
            }
            bytes += m.len();
            let format = Format::of(&f);
            out.push((f, format, m.len()));
        }
        Ok(Corpus {
            files: out,
            field: field.unwrap_or("text").to_string(),
            bytes,
        })
    }

    /// Whether every file is plain text (no records or rows to read).
    pub fn is_plain_text(&self) -> bool {
        self.files.iter().all(|f| f.1 == Format::Text)
    }

    /// 16 hex digits of SHA-256 over the files' formats, sizes and bytes in reading order
    /// (and the text field, where records or rows are read): the same fingerprint means the
    /// same documents. Read in blocks; nothing is held.
    pub fn fingerprint(&self) -> Result<String, DataError> {
        let mut h = Sha256::new();
        h.update(b"genas.corpus.v1");
        if !self.is_plain_text() {
            h.update((self.field.len() as u64).to_le_bytes());
            h.update(self.field.as_bytes());
        }
        let mut buf = vec![0u8; BLOCK_BYTES];
        for (path, format, len) in &self.files {
            h.update(format.tag().as_bytes());
            h.update(len.to_le_bytes());
            let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
            let mut seen = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(|e| io(path, e))?;
                if n == 0 {
                    break;
                }
                seen += n as u64;
                h.update(&buf[..n]);
            }
            if seen != *len {
                return Err(bad(path, "the file changed while it was read"));
            }
        }
        Ok(genas_space::hex16(h))
    }

    /// Hands every document over in pieces, in order, with the bytes of the corpus read so
    /// far (for progress). A file that is not what its name says is an error naming it.
    pub fn read(
        &self,
        visit: &mut dyn FnMut(Piece<'_>, u64) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let mut before = 0u64;
        for (path, format, len) in &self.files {
            match format {
                Format::Text => read_text(path, before, visit)?,
                Format::JsonLines => read_jsonl(path, &self.field, before, visit)?,
                Format::Parquet => read_parquet(path, &self.field, before, *len, visit)?,
            }
            before += len;
        }
        Ok(())
    }

    /// The whole corpus as one string, documents joined by a newline (what a character or
    /// byte vocabulary is built from), or why it cannot be held: at most
    /// [`MAX_DATA_FILE_BYTES`], and the memory must be available.
    pub fn read_string(&self) -> Result<String, DataError> {
        let first = self.files.first().map(|f| f.0.as_path());
        let where_ = first.unwrap_or(Path::new("."));
        if self.bytes > MAX_DATA_FILE_BYTES {
            return Err(bad(
                where_,
                format!(
                    "{} bytes of text are more than a character or byte vocabulary is built from (at most {}); use a tokenizer.json, whose tokens are streamed",
                    self.bytes, MAX_DATA_FILE_BYTES
                ),
            ));
        }
        let mut out = String::new();
        out.try_reserve(self.bytes as usize).map_err(|_| {
            bad(
                where_,
                format!("{} bytes of text do not fit in memory", self.bytes),
            )
        })?;
        let mut pending = false;
        self.read(&mut |piece, _| {
            match piece {
                Piece::Text(t) => {
                    if pending {
                        out.push('\n');
                        pending = false;
                    }
                    if out.try_reserve(t.len() + 1).is_err() {
                        return Err(bad(where_, "the text does not fit in memory"));
                    }
                    out.push_str(t);
                }
                Piece::End => pending = true,
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// A UTF-8 text file in blocks: one document. Empty (or whitespace only), binary (a NUL byte)
/// and non-UTF-8 files are refused, naming the offset.
fn read_text(
    path: &Path,
    before: u64,
    visit: &mut dyn FnMut(Piece<'_>, u64) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut buf = vec![0u8; BLOCK_BYTES + 4];
    // Bytes of an incomplete character carried to the next block.
    let mut carry = 0usize;
    let mut offset = 0u64;
    let mut any_text = false;
    loop {
        let n = f.read(&mut buf[carry..]).map_err(|e| io(path, e))?;
        let end = carry + n;
        if end == 0 {
            break;
        }
        let block = &buf[..end];
        if let Some(at) = block.iter().position(|&b| b == 0) {
            return Err(bad(
                path,
                format!(
                    "binary data, not text (NUL byte at offset {})",
                    offset + at as u64
                ),
            ));
        }
        let valid = match std::str::from_utf8(block) {
            Ok(s) => s.len(),
            // An incomplete character at the end of a block, more to read: kept for the next.
            Err(e) if e.error_len().is_none() && n > 0 => e.valid_up_to(),
            Err(e) => {
                return Err(bad(
                    path,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        offset + e.valid_up_to() as u64
                    ),
                ))
            }
        };
        // Checked just above: the first `valid` bytes are UTF-8.
        let text = std::str::from_utf8(&block[..valid]).map_err(|e| bad(path, e.to_string()))?;
        any_text |= !text.bytes().all(|b| b.is_ascii_whitespace());
        offset += valid as u64;
        if !text.is_empty() {
            visit(Piece::Text(text), before + offset)?;
        }
        buf.copy_within(valid..end, 0);
        carry = end - valid;
        if n == 0 {
            break;
        }
    }
    if !any_text {
        return Err(bad(path, "the file is empty"));
    }
    visit(Piece::End, before + offset)
}

/// A JSON Lines file: each non-blank line an object whose `field` is the document's text
/// (a null or empty text makes no document).
fn read_jsonl(
    path: &Path,
    field: &str,
    before: u64,
    visit: &mut dyn FnMut(Piece<'_>, u64) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut line = Vec::new();
    let (mut offset, mut number, mut documents) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        offset += n as u64;
        if line.len() > MAX_RECORD_BYTES {
            return Err(bad(
                path,
                format!(
                    "line {number} is longer than {} MiB",
                    MAX_RECORD_BYTES >> 20
                ),
            ));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&line)
            .map_err(|e| bad(path, format!("line {number} is not a JSON object: {e}")))?;
        let text = match record.get(field) {
            Some(serde_json::Value::String(s)) => s,
            // A null text makes no document, as a null Parquet row does.
            Some(serde_json::Value::Null) => continue,
            Some(other) => {
                let kind = match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::Object(_) => "an object",
                    serde_json::Value::String(_) => "a string",
                };
                return Err(bad(
                    path,
                    format!("line {number}: {field:?} is {kind}, not a string"),
                ));
            }
            None => {
                let mut fields: Vec<&str> = record.keys().map(String::as_str).take(8).collect();
                fields.sort();
                return Err(bad(
                    path,
                    format!(
                        "line {number} has no {field:?} field (its fields: {}); [data] text_field names another",
                        fields.join(", ")
                    ),
                ));
            }
        };
        if text.is_empty() {
            continue;
        }
        documents += 1;
        visit(Piece::Text(text), before + offset)?;
        visit(Piece::End, before + offset)?;
    }
    if documents == 0 {
        return Err(bad(path, format!("no record holds text in {field:?}")));
    }
    Ok(())
}

/// A Parquet file: each row's `field` column (a string) is a document; null and empty rows
/// make none. Read a row group and a page at a time through the `parquet` crate.
fn read_parquet(
    path: &Path,
    field: &str,
    before: u64,
    len: u64,
    visit: &mut dyn FnMut(Piece<'_>, u64) -> Result<(), DataError>,
) -> Result<(), DataError> {
    // The reader may panic on a malformed file: that is an error naming it, not an abort.
    let mut documents = 0u64;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_parquet_rows(path, field, before, len, &mut documents, visit)
    }));
    match run {
        Ok(r) => r?,
        Err(_) => {
            return Err(bad(
                path,
                "not a Parquet file genas can read (its reader failed)",
            ))
        }
    }
    if documents == 0 {
        return Err(bad(path, format!("no row holds text in {field:?}")));
    }
    Ok(())
}

fn read_parquet_rows(
    path: &Path,
    field: &str,
    before: u64,
    len: u64,
    documents: &mut u64,
    visit: &mut dyn FnMut(Piece<'_>, u64) -> Result<(), DataError>,
) -> Result<(), DataError> {
    use parquet::basic::Type as Physical;
    use parquet::column::reader::ColumnReader;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let unreadable = |e: parquet::errors::ParquetError| {
        bad(path, format!("not a Parquet file genas can read: {e}"))
    };
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(unreadable)?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let column = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().parts() == [field.to_string()])
        .ok_or_else(|| {
            let names: Vec<String> = (0..schema.num_columns().min(8))
                .map(|i| schema.column(i).path().string())
                .collect();
            bad(
                path,
                format!(
                    "no column {field:?} (its columns: {}); [data] text_field names another",
                    names.join(", ")
                ),
            )
        })?;
    let desc = schema.column(column);
    if desc.physical_type() != Physical::BYTE_ARRAY || desc.max_rep_level() > 0 {
        return Err(bad(
            path,
            format!("column {field:?} does not hold one string per row"),
        ));
    }
    let groups = meta.num_row_groups();
    let mut row = 0u64;
    for g in 0..groups {
        let group = reader.get_row_group(g).map_err(unreadable)?;
        let ColumnReader::ByteArrayColumnReader(mut values_of) =
            group.get_column_reader(column).map_err(unreadable)?
        else {
            return Err(bad(path, format!("column {field:?} does not hold strings")));
        };
        let done = before + len * (g as u64 + 1) / groups as u64;
        let (mut defs, mut values) = (Vec::new(), Vec::new());
        loop {
            defs.clear();
            values.clear();
            let def = (desc.max_def_level() > 0).then_some(&mut defs);
            let (records, _, _) = values_of
                .read_records(1024, def, None, &mut values)
                .map_err(unreadable)?;
            if records == 0 {
                break;
            }
            // Rows in order: with definition levels, a row below the column's maximum is null.
            let full = desc.max_def_level();
            let mut next = values.iter();
            for r in 0..records {
                row += 1;
                if full > 0 && defs.get(r).is_some_and(|&d| d < full) {
                    continue;
                }
                let Some(v) = next.next() else {
                    return Err(bad(path, format!("row {row}: a value is missing")));
                };
                let text = std::str::from_utf8(v.data()).map_err(|e| {
                    bad(
                        path,
                        format!(
                            "row {row}: {field:?} is not UTF-8 text (invalid byte at offset {})",
                            e.valid_up_to()
                        ),
                    )
                })?;
                if text.is_empty() {
                    continue;
                }
                *documents += 1;
                visit(Piece::Text(text), done)?;
                visit(Piece::End, done)?;
            }
        }
    }
    Ok(())
}

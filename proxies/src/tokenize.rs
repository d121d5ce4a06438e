//! Hugging Face tokenizers (`tokenizer.json`: BPE, Unigram, WordPiece, as the file says) for
//! text corpora, and the cache of the token streams they produce.
//!
//! A corpus is encoded once, in parallel: it is cut after line ends into chunks of about
//! [`CHUNK_BYTES`], each chunk encoded without special tokens, the ids concatenated. (So a
//! tokenizer that marks the start of a text, as SentencePiece's "▁" prefix does, marks each
//! chunk's start; a chunk always starts at a line start.) The stream is cached under a key of
//! the text's SHA-256 and the tokenizer file's, so a second run reads it instead.
//!
//! It knows nothing of splits or models: `data` cuts the stream, `pretrained` reads teachers.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of text per chunk encoded at once.
pub const CHUNK_BYTES: usize = 256 << 10;

/// tokenizer.json files larger than this are refused (real ones are a few megabytes).
const MAX_TOKENIZER_BYTES: u64 = 512 << 20;

/// A tokenizer file that cannot be read, or text it cannot encode: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenizerError(pub String);

impl From<String> for TokenizerError {
    fn from(why: String) -> TokenizerError {
        TokenizerError(why)
    }
}

impl From<&str> for TokenizerError {
    fn from(why: &str) -> TokenizerError {
        TokenizerError(why.to_string())
    }
}

impl From<TokenizerError> for String {
    fn from(e: TokenizerError) -> String {
        e.0
    }
}

/// A loaded `tokenizer.json`, compared by the hash of its file.
#[derive(Clone)]
pub struct HfTokenizer {
    /// 16 hex digits of SHA-256 of the file.
    pub hash: String,
    /// Where it was read from, for messages.
    pub path: PathBuf,
    /// Entries, added tokens included.
    pub size: u32,
    inner: Arc<tokenizers::Tokenizer>,
    bytes: Arc<Vec<u8>>,
}

impl fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HfTokenizer({}, {} entries, {})",
            self.path.display(),
            self.size,
            self.hash
        )
    }
}

impl PartialEq for HfTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}

impl Eq for HfTokenizer {}

impl Serialize for HfTokenizer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("HfTokenizer", 2)?;
        st.serialize_field("hash", &self.hash)?;
        st.serialize_field("size", &self.size)?;
        st.end()
    }
}

impl HfTokenizer {
    /// Reads `path`; the error is one line naming it.
    pub fn from_file(path: &Path) -> Result<HfTokenizer, TokenizerError> {
        let name = path.display();
        let bytes = genas_space::files::read_bounded(path, MAX_TOKENIZER_BYTES)
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        let unreadable = |e: String| {
            let e = e.replace('\n', " ");
            format!("{name} is not a tokenizer.json transformers' tokenizers can read: {e}")
        };
        // The tokenizers crate panics on some malformed JSON (found by `genas bench fuzz`):
        // the JSON is checked first, and a panic that remains is an error, not an abort.
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .map_err(|_| unreadable("its reader failed on it".into()))?
            .map_err(|e| unreadable(e.to_string()))?;
        let size = inner.get_vocab_size(true);
        if size < 2 || size > genas_space::arch::limits::MAX_VOCAB as usize {
            return Err(format!(
                "{name}: a vocabulary of {size} entries (genas takes 2 to {})",
                genas_space::arch::limits::MAX_VOCAB
            )
            .into());
        }
        let mut h = Sha256::new();
        h.update(&bytes);
        Ok(HfTokenizer {
            hash: genas_space::hex16(h),
            path: path.to_path_buf(),
            size: size as u32,
            inner: Arc::new(inner),
            bytes: Arc::new(bytes),
        })
    }

    /// The ids of `text`, without special tokens, encoded in parallel chunks cut after line
    /// ends; `progress(done, total)` is told bytes as chunks finish.
    pub fn encode(
        &self,
        text: &str,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<u32>, TokenizerError> {
        use rayon::prelude::*;
        let chunks = chunks(text, CHUNK_BYTES);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let parts: Result<Vec<Vec<u32>>, String> = chunks
            .par_iter()
            .map(|chunk| {
                let enc = self.inner.encode_fast(*chunk, false).map_err(|e| {
                    format!(
                        "{}: {}",
                        self.path.display(),
                        e.to_string().replace('\n', " ")
                    )
                })?;
                let d = done.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                progress(d + chunk.len(), text.len());
                Ok(enc.get_ids().to_vec())
            })
            .collect();
        Ok(parts?.concat())
    }

    /// The file as read, to hand over beside an exported model.
    pub fn file_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The ids of a short text (a prompt), without special tokens.
    pub fn encode_one(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| {
                TokenizerError(format!(
                    "{}: {}",
                    self.path.display(),
                    e.to_string().replace('\n', " ")
                ))
            })
    }

    /// The text of `ids` (special tokens kept); lossy where ids are out of the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner
            .decode(ids, false)
            .unwrap_or_else(|_| "\u{FFFD}".repeat(ids.len()))
    }
}

/// `text` cut after a line end once a chunk holds `target` bytes (a line longer than that
/// is cut at a char boundary).
fn chunks(text: &str, target: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() <= target {
            out.push(rest);
            break;
        }
        let mut cut = match rest[target..].find('\n') {
            Some(i) => target + i + 1,
            None => rest.len(),
        };
        if cut > 4 * target {
            cut = 4 * target;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

/// The cache file of `text` under `tok` in `dir`: `<text sha>-<tokenizer sha>.tokens`.
pub fn cache_path(dir: &Path, text: &str, tok: &HfTokenizer) -> PathBuf {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    dir.join(format!("{}-{}.tokens", genas_space::hex16(h), tok.hash))
}

const CACHE_MAGIC: &[u8; 8] = b"genastok";

/// The cached stream at `path`, if it is there and whole (anything else is recomputed).
pub fn read_cache(path: &Path, vocab: u32) -> Option<Vec<u32>> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.strip_prefix(CACHE_MAGIC)?;
    let (n, rest) = body.split_at_checked(8)?;
    let n = u64::from_le_bytes(n.try_into().ok()?) as usize;
    if rest.len() != n.checked_mul(4)? {
        return None;
    }
    let ids: Vec<u32> = rest
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    ids.iter().all(|&t| t < vocab).then_some(ids)
}

/// Writes the stream through a temporary file and a rename; a failure only costs the cache.
pub fn write_cache(path: &Path, ids: &[u32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = Vec::with_capacity(16 + 4 * ids.len());
    bytes.extend_from_slice(CACHE_MAGIC);
    bytes.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for t in ids {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    let tmp = path.with_extension(format!("tokens.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Where token streams are cached: `$GENAS_CACHE_DIR`, else `$XDG_CACHE_HOME/genas/tokens`,
/// else `~/.cache/genas/tokens`; `None` when none is set (nothing is cached then).
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("GENAS_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("genas/tokens")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/genas/tokens")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_text_and_end_at_line_ends() {
        let text = "ab\ncd\nef\n".repeat(50) + "no newline at all here";
        let cs = chunks(&text, 7);
        assert_eq!(cs.concat(), text);
        assert!(cs[..cs.len() - 1].iter().all(|c| c.ends_with('\n')));
        let long = "é".repeat(100);
        let cs = chunks(&long, 10);
        assert_eq!(cs.concat(), long);
        assert!(cs.iter().all(|c| c.len() <= 40));
    }
}

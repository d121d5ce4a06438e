//! Hugging Face tokenizers (`tokenizer.json`: BPE, Unigram, WordPiece, as the file says) for
//! text corpora, and the cache of the token streams they produce.
//!
//! A corpus is encoded once, as it streams, in parallel: each document is cut after line ends
//! into chunks of about [`CHUNK_BYTES`], each chunk encoded without special tokens, the ids
//! written in order to a token file (`tokens`), the end-of-text token after each document.
//! (So a tokenizer that marks the start of a text, as SentencePiece's "▁" prefix does, marks
//! each chunk's start; a chunk always starts at a line start.) The file is kept under a key of
//! the corpus's fingerprint and the tokenizer file's hash, so a second run maps it instead.
//!
//! It knows nothing of splits or models: `data` cuts the stream, `pretrained` reads teachers.

use crate::corpus::{Corpus, DataError, Piece};
use crate::tokens::{PushError, TokenWriter};
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
    /// ends (as [`HfTokenizer::encode_corpus`] cuts a corpus); `progress(done, total)` is told
    /// bytes as chunks finish.
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
                let ids = self.encode_chunk(chunk)?;
                let d = done.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                progress(d + chunk.len(), text.len());
                Ok(ids)
            })
            .collect();
        Ok(parts?.concat())
    }

    fn encode_chunk(&self, chunk: &str) -> Result<Vec<u32>, String> {
        self.inner
            .encode_fast(chunk, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| {
                format!(
                    "{}: {}",
                    self.path.display(),
                    e.to_string().replace('\n', " ")
                )
            })
    }

    /// Encodes a corpus as it streams into `out`: each document cut after line ends into
    /// chunks of about [`CHUNK_BYTES`], [`BATCH_BYTES`] of chunks encoded at once in parallel,
    /// the ids written in order, and `eos` after every document (without it, documents are
    /// joined by a newline, so a folder of text files encodes as their joined text did).
    /// `progress(done, total)` is told the corpus's bytes read as batches finish. Holds one
    /// batch of text and its ids, whatever the corpus's size.
    pub fn encode_corpus(
        &self,
        corpus: &Corpus,
        eos: Option<u32>,
        out: &mut TokenWriter,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(), DataError> {
        let total = corpus.bytes as usize;
        let mut batch: Vec<Chunk> = Vec::new();
        let mut held = 0usize;
        let mut chunker = Chunker::new(CHUNK_BYTES);
        let mut separate = false;
        let mut cuts = Vec::new();
        corpus.read(&mut |piece, done| {
            let mut ended = false;
            match piece {
                Piece::Text(text) => {
                    if separate {
                        chunker.push("\n", &mut cuts);
                        separate = false;
                    }
                    chunker.push(text, &mut cuts);
                }
                Piece::End if eos.is_some() => {
                    chunker.finish(&mut cuts);
                    ended = true;
                }
                Piece::End => separate = true,
            }
            held += cuts.iter().map(String::len).sum::<usize>();
            batch.extend(cuts.drain(..).map(Chunk::Text));
            if ended {
                batch.push(Chunk::End);
            }
            if held >= BATCH_BYTES {
                self.flush(&mut batch, eos, out)?;
                held = 0;
                progress(done as usize, total);
            }
            Ok(())
        })?;
        chunker.finish(&mut cuts);
        batch.extend(cuts.drain(..).map(Chunk::Text));
        self.flush(&mut batch, eos, out)?;
        progress(total, total);
        Ok(())
    }

    /// Encodes a batch of chunks in parallel and writes the ids in order.
    fn flush(
        &self,
        batch: &mut Vec<Chunk>,
        eos: Option<u32>,
        out: &mut TokenWriter,
    ) -> Result<(), DataError> {
        use rayon::prelude::*;
        let encoded: Result<Vec<(Vec<u32>, u64)>, String> = batch
            .par_iter()
            .map(|c| match c {
                Chunk::Text(t) => Ok((self.encode_chunk(t)?, t.chars().count() as u64)),
                Chunk::End => Ok((eos.into_iter().collect(), 0)),
            })
            .collect();
        for (ids, chars) in encoded? {
            out.push(&ids).map_err(|e| match e {
                PushError::Beyond(t) => DataError::Invalid(format!(
                    "{} gives token id {t}, beyond the vocabulary",
                    self.path.display()
                )),
                PushError::Io(e) => {
                    DataError::Invalid(format!("cannot write the token stream: {e}"))
                }
            })?;
            out.add_chars(chars);
        }
        batch.clear();
        Ok(())
    }

    /// The id of `token` (an added or regular entry), if the tokenizer has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The tokenizer's end-of-text token, by the names the usual families give it.
    pub fn end_of_text(&self) -> Option<u32> {
        END_OF_TEXT.iter().find_map(|t| self.token_id(t))
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

/// Names of a document's end across tokenizer families (GPT-2, Qwen, SmolLM; Llama 3;
/// Llama 2, Mistral; Gemma), the first the tokenizer has is taken.
const END_OF_TEXT: [&str; 4] = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"];

/// Bytes of chunks encoded at once, across threads, before their ids are written.
pub const BATCH_BYTES: usize = 16 << 20;

/// What a batch holds: a chunk of text, or the end of a document.
enum Chunk {
    Text(String),
    End,
}

/// Cuts a text that arrives in pieces exactly as [`chunks`] cuts it whole: after the first
/// line end at or beyond `target` bytes, or at `4 × target` bytes (a character boundary)
/// when no line ends by then.
struct Chunker {
    target: usize,
    buf: String,
}

impl Chunker {
    fn new(target: usize) -> Chunker {
        Chunker {
            target: target.max(1),
            buf: String::new(),
        }
    }

    /// Adds text; the chunks now certain go to `out`.
    fn push(&mut self, text: &str, out: &mut Vec<String>) {
        self.buf.push_str(text);
        self.cut_all(false, out);
    }

    /// The rest, as chunks.
    fn finish(&mut self, out: &mut Vec<String>) {
        self.cut_all(true, out);
    }

    fn cut_all(&mut self, end: bool, out: &mut Vec<String>) {
        let mut start = 0;
        while let Some(cut) = self.cut(&self.buf[start..], end) {
            out.push(self.buf[start..start + cut].to_string());
            start += cut;
        }
        self.buf.drain(..start);
    }

    /// Where the next chunk of `rest` ends, once that is certain.
    fn cut(&self, rest: &str, end: bool) -> Option<usize> {
        let (t, limit) = (self.target, 4 * self.target);
        if rest.is_empty() || (rest.len() <= t && !end) {
            return None;
        }
        if rest.len() <= t {
            return Some(rest.len());
        }
        let floor = |mut at: usize| {
            while !rest.is_char_boundary(at) {
                at -= 1;
            }
            at
        };
        match rest.as_bytes()[t..].iter().position(|&b| b == b'\n') {
            Some(i) if t + i < limit => Some(t + i + 1),
            Some(_) => Some(floor(limit)),
            None if rest.len() > limit => Some(floor(limit)),
            None => end.then_some(rest.len()),
        }
    }
}

/// `text` cut after a line end once a chunk holds `target` bytes (a line longer than that
/// is cut at a char boundary).
fn chunks(text: &str, target: usize) -> Vec<String> {
    let mut c = Chunker::new(target);
    let mut out = Vec::new();
    c.push(text, &mut out);
    c.finish(&mut out);
    out
}

/// The token file of a corpus (its [`Corpus::fingerprint`]) under `tok`, with `eos` ending
/// each document, in `dir`: `<corpus>-<tokenizer>[-eos<id>].tokens`.
pub fn cache_path(dir: &Path, corpus: &str, tok: &HfTokenizer, eos: Option<u32>) -> PathBuf {
    let eos = eos.map(|e| format!("-eos{e}")).unwrap_or_default();
    dir.join(format!("{corpus}-{}{eos}.tokens", tok.hash))
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
        // A target inside a character (é is 2 bytes, 語 3) cuts at a boundary, never panics.
        for long in ["é".repeat(100), "語a".repeat(100)] {
            for target in [7, 10, 11] {
                let cs = chunks(&long, target);
                assert_eq!(cs.concat(), long);
                assert!(cs.iter().all(|c| c.len() <= 4 * target));
            }
        }
    }

    #[test]
    fn text_arriving_in_pieces_is_cut_as_the_whole_text_is() {
        // The rule applied to the whole text, written out independently of the chunker.
        fn reference(text: &str, t: usize) -> Vec<String> {
            let mut out = Vec::new();
            let mut rest = text;
            while !rest.is_empty() {
                if rest.len() <= t {
                    out.push(rest.to_string());
                    break;
                }
                let mut cut = match rest.as_bytes()[t..].iter().position(|&b| b == b'\n') {
                    Some(i) => t + i + 1,
                    None => rest.len(),
                };
                if cut > 4 * t {
                    cut = 4 * t;
                    while !rest.is_char_boundary(cut) {
                        cut -= 1;
                    }
                }
                out.push(rest[..cut].to_string());
                rest = &rest[cut..];
            }
            out
        }
        let mut rng = genas_space::Rng::seed_from_u64(7);
        let alphabet = ["a", "b", "\n", "é", "語", " "];
        for case in 0..200 {
            let n = rng.index(400);
            let text: String = (0..n)
                .map(|_| alphabet[rng.index(alphabet.len())])
                .collect();
            let t = 1 + rng.index(12);
            let want = reference(&text, t);
            assert_eq!(chunks(&text, t), want, "case {case}");
            // The same text pushed in random pieces (at character boundaries).
            let mut c = Chunker::new(t);
            let mut got = Vec::new();
            let mut at = 0;
            while at < text.len() {
                let mut end = (at + 1 + rng.index(30)).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                c.push(&text[at..end], &mut got);
                at = end;
            }
            c.finish(&mut got);
            assert_eq!(got, want, "case {case} in pieces");
        }
    }
}

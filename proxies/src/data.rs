//! Data sets as token streams: text corpora (characters or bytes) and IDX images (pixel tokens).
//!
//! Text: the file (or every `*.txt` file of a folder, in name order, joined by a newline) is cut
//! into blocks; evenly spaced blocks form the validation split, the rest the training split, so
//! validation samples every part of the corpus and the split never depends on a random seed.
//! The character vocabulary is the sorted set of training characters; a validation character
//! the training split lacks maps to an extra `\u{FFFD}` token.
//!
//! Images: an IDX file of unsigned bytes (count × rows × cols) is resampled by area averaging to
//! `image_size²` and quantised to `gray_levels`; each image is one sequence, generated in raster
//! order after a begin-of-image token (`BOS = gray_levels`), so the vocabulary is
//! `gray_levels + 1` and the context `image_size²`.

pub use crate::corpus::DataError;
use crate::corpus::{bad, io, Corpus, MAX_DATA_FILE_BYTES};
use crate::tokenize::HfTokenizer;
use crate::tokens::{TokenFile, TokenWriter, Tokens};
use genas_space::{DataConfig, DataKind, Experiment, Tokenizer};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

impl From<crate::tokenize::TokenizerError> for DataError {
    fn from(e: crate::tokenize::TokenizerError) -> DataError {
        DataError::Invalid(e.0)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    genas_space::files::read_bounded(path, MAX_DATA_FILE_BYTES).map_err(|e| io(path, e))
}

/// How tokens map to what they stand for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Vocabulary {
    /// Token i is `chars[i]`.
    Chars { chars: Vec<char> },
    /// Token i is byte i (256 tokens).
    Bytes,
    /// Tokens 0..levels are gray levels (0 = black), token `levels` begins an image.
    Pixels { levels: u32 },
    /// A Hugging Face tokenizer's ids; `size` is the model's vocabulary (a teacher's may be
    /// padded beyond the tokenizer's entries).
    Hf { tokenizer: HfTokenizer, size: u32 },
    /// Ids that stand for nothing (benchmarks at a given vocabulary size).
    Ids { size: u32 },
}

impl Vocabulary {
    pub fn size(&self) -> u32 {
        match self {
            Vocabulary::Chars { chars } => chars.len() as u32,
            Vocabulary::Bytes => 256,
            Vocabulary::Pixels { levels } => levels + 1,
            Vocabulary::Hf { size, .. } | Vocabulary::Ids { size } => *size,
        }
    }

    /// Text for text tokens (lossy for bytes); pixel tokens as hex digits of their level.
    pub fn decode(&self, tokens: &[u32]) -> String {
        match self {
            Vocabulary::Chars { chars } => tokens
                .iter()
                .map(|&t| chars.get(t as usize).copied().unwrap_or('\u{FFFD}'))
                .collect(),
            Vocabulary::Bytes => {
                let bytes: Vec<u8> = tokens.iter().map(|&t| t as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Vocabulary::Hf { tokenizer, .. } => tokenizer.decode(tokens),
            Vocabulary::Ids { .. } => tokens.iter().map(|t| format!("<{t}>")).collect(),
            Vocabulary::Pixels { levels } => tokens
                .iter()
                .map(|&t| {
                    if t >= *levels {
                        '^'
                    } else {
                        char::from_digit(t % 36, 36).unwrap_or('?')
                    }
                })
                .collect(),
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Vocabulary::Chars { chars } => {
                let shown: String = chars
                    .iter()
                    .map(|c| match c {
                        '\n' => "\\n".to_string(),
                        '\t' => "\\t".to_string(),
                        ' ' => "␣".to_string(),
                        c => c.to_string(),
                    })
                    .collect();
                format!("{} characters: {shown}", chars.len())
            }
            Vocabulary::Bytes => "256 bytes".into(),
            Vocabulary::Pixels { levels } => format!("{levels} gray levels + begin-of-image"),
            Vocabulary::Ids { size } => format!("{size} ids"),
            Vocabulary::Hf { tokenizer, size } => format!(
                "{size} tokens of {} ({} entries, sha256 {})",
                tokenizer.path.display(),
                tokenizer.size,
                tokenizer.hash
            ),
        }
    }
}

/// A tokenised data set with its split.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub kind: DataKind,
    pub vocab: Vocabulary,
    /// Text: one token stream. Images: `train.len() / context` images of `context` pixels.
    /// A Hugging Face tokenizer's splits are views of one mapped token file.
    pub train: Tokens,
    pub validation: Tokens,
    /// Tokens per training sequence.
    pub context: u32,
    /// What was read, for reports.
    pub source: String,
    /// SHA-256 (16 hex digits) of the vocabulary, context and both token streams: the same
    /// fingerprint means the same data, whatever the paths.
    pub fingerprint: String,
    /// Images only: rows × cols of the source images.
    pub source_image_size: Option<(u32, u32)>,
    /// Hugging Face tokenizers only: tokens per character over the whole corpus, so losses
    /// per token read as bits per character, comparable across tokenizers.
    pub tokens_per_char: Option<f64>,
}

/// Figures `genas data inspect` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DataSummary {
    pub kind: DataKind,
    pub source: String,
    pub vocab_size: u32,
    pub vocabulary: String,
    pub context: u32,
    pub train_tokens: usize,
    pub validation_tokens: usize,
    /// Text: non-overlapping sequences of `context` tokens; images: images.
    pub train_sequences: usize,
    pub validation_sequences: usize,
    pub fingerprint: String,
    pub source_image_size: Option<(u32, u32)>,
    pub tokens_per_char: Option<f64>,
}

impl Dataset {
    /// Loads the experiment's `[data]`; a Hugging Face tokenizer's stream is cached in
    /// [`crate::tokenize::default_cache_dir`].
    /// An experiment with a pretrained teacher and a tokenizer needs the teacher's vocabulary
    /// size: [`Dataset::load_with`].
    pub fn load(exp: &Experiment) -> Result<Dataset, DataError> {
        Dataset::load_with(
            exp,
            None,
            crate::tokenize::default_cache_dir().as_deref(),
            &|_, _| {},
        )
    }

    /// [`Dataset::load`] for a pretrained teacher whose vocabulary holds `teacher_vocab`
    /// entries (its `config.json`'s `vocab_size`, which the tokenizer's ids must stay below),
    /// with the token cache in `cache` (none: encode every time) and `progress(bytes done,
    /// bytes)` told as a Hugging Face tokenizer encodes the corpus.
    pub fn load_with(
        exp: &Experiment,
        teacher_vocab: Option<u32>,
        cache: Option<&Path>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Dataset, DataError> {
        let path = exp.data_path();
        let Some(tok_path) = exp.tokenizer_path() else {
            return Dataset::load_config(&exp.data, &path, exp.validation_path().as_deref());
        };
        let tok = HfTokenizer::from_file(&tok_path).map_err(|reason| DataError::Bad {
            path: exp.source.display().to_string(),
            reason: format!("[data] tokenizer: {reason}"),
        })?;
        let size = match exp.teacher_dir() {
            Some(dir) => {
                let Some(size) = teacher_vocab else {
                    return Err(bad(
                        &dir,
                        "the pretrained teacher's vocabulary size is needed to read its tokenizer's ids (Dataset::load_with)",
                    ));
                };
                if tok.size > size {
                    return Err(bad(
                        &tok_path,
                        format!(
                            "the tokenizer has {} entries but the teacher's vocabulary only {size}",
                            tok.size
                        ),
                    ));
                }
                size
            }
            None => tok.size,
        };
        let corpus = Corpus::open(&path, exp.data.text_field.as_deref())?;
        let eos = eos_token(exp, &tok)?;
        Dataset::from_corpus_hf(
            &corpus,
            &tok,
            eos,
            size,
            exp.data.seq_len.unwrap_or(64),
            exp.data.validation_fraction,
            &path.display().to_string(),
            cache,
            progress,
        )
        .map_err(|e| match e {
            DataError::Invalid(reason) => bad(&path, reason),
            e => e,
        })
    }

    /// Encodes a corpus with a Hugging Face tokenizer as it streams into a token file of ids
    /// below `size` (`eos` after each document), or maps the file a previous run left in
    /// `cache`, and splits it as [`Dataset::from_text`] does, into views of the file.
    #[allow(clippy::too_many_arguments)]
    pub fn from_corpus_hf(
        corpus: &Corpus,
        tok: &HfTokenizer,
        eos: Option<u32>,
        size: u32,
        seq_len: u32,
        validation_fraction: f64,
        source: &str,
        cache: Option<&Path>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Dataset, DataError> {
        let cached = match cache {
            Some(dir) => Some(crate::tokenize::cache_path(
                dir,
                &corpus.fingerprint()?,
                tok,
                eos,
            )),
            None => None,
        };
        let file = match cached.as_deref().map(|p| TokenFile::open(p, size)) {
            Some(Ok(file)) => file,
            _ => {
                let stream_error = |e: std::io::Error| {
                    DataError::Invalid(format!("cannot write the token stream: {e}"))
                };
                // A cache that cannot be written costs only the next run's encoding.
                let mut out = match cached
                    .as_deref()
                    .map(|p| TokenWriter::create(size, Some(p)))
                {
                    Some(Ok(w)) => w,
                    _ => TokenWriter::create(size, None).map_err(stream_error)?,
                };
                tok.encode_corpus(corpus, eos, &mut out, progress)?;
                out.finish().map_err(stream_error)?
            }
        };
        let chars = file.chars().max(1);
        let stream = Tokens::from(file);
        let (train, validation) = split_text(&stream, seq_len, validation_fraction)?;
        let mut ds = Dataset::finish(
            DataKind::Text,
            Vocabulary::Hf {
                tokenizer: tok.clone(),
                size,
            },
            train,
            validation,
            seq_len,
            source.to_string(),
            None,
        );
        ds.tokens_per_char = Some(stream.len() as f64 / chars as f64);
        Ok(ds)
    }

    /// Loads data described by `cfg` from `path` (and `validation_path` for images).
    pub fn load_config(
        cfg: &DataConfig,
        path: &Path,
        validation_path: Option<&Path>,
    ) -> Result<Dataset, DataError> {
        match cfg.kind {
            DataKind::Text => {
                let tokenizer = cfg.tokenizer.clone().unwrap_or(Tokenizer::Char);
                if tokenizer.is_hf() {
                    return Err(bad(path, "a Hugging Face tokenizer is read through an experiment file (Dataset::load)"));
                }
                let text = Corpus::open(path, cfg.text_field.as_deref())?.read_string()?;
                Dataset::from_text(
                    &text,
                    tokenizer,
                    cfg.seq_len.unwrap_or(64),
                    cfg.validation_fraction,
                    &path.display().to_string(),
                )
                .map_err(|reason| bad(path, reason))
            }
            DataKind::Image => {
                let size = cfg.image_size.unwrap_or(14);
                let levels = cfg.gray_levels.unwrap_or(16);
                let train_images = read_idx_images(path)?;
                let (mut train, validation) = match validation_path {
                    Some(vp) => (train_images, read_idx_images(vp)?),
                    None => split_images(train_images, cfg.validation_fraction)
                        .map_err(|r| bad(path, r))?,
                };
                if let Some(max) = cfg.max_images {
                    train.truncate_images(max as usize);
                }
                if validation.rows != train.rows || validation.cols != train.cols {
                    return Err(bad(
                        validation_path.unwrap_or(path),
                        format!(
                            "validation images are {}×{} but training images {}×{}",
                            validation.rows, validation.cols, train.rows, train.cols
                        ),
                    ));
                }
                let mut source = path.display().to_string();
                if let Some(vp) = validation_path {
                    source.push_str(&format!(" + {}", vp.display()));
                }
                Ok(Dataset::from_images(
                    &train,
                    &validation,
                    size,
                    levels,
                    source,
                ))
            }
        }
    }

    /// Tokenises a text corpus and splits it.
    pub fn from_text(
        text: &str,
        tokenizer: Tokenizer,
        seq_len: u32,
        validation_fraction: f64,
        source: &str,
    ) -> Result<Dataset, DataError> {
        // Characters are first kept as code points and mapped to vocabulary indices after the
        // split, since the vocabulary is the training split's.
        let stream: Vec<u32> = match tokenizer {
            Tokenizer::Byte => text.bytes().map(u32::from).collect(),
            Tokenizer::Char => text.chars().map(u32::from).collect(),
            Tokenizer::Teacher | Tokenizer::File(_) => {
                return Err("a Hugging Face tokenizer is applied by Dataset::from_text_hf".into())
            }
        };
        let (train, validation) = split_text(&Tokens::from(stream), seq_len, validation_fraction)?;
        let (train, validation, vocab) = match tokenizer {
            Tokenizer::Byte => (train, validation, Vocabulary::Bytes),
            Tokenizer::Teacher | Tokenizer::File(_) => unreachable!("refused above"),
            Tokenizer::Char => {
                // Distinct code points in one pass over a seen-table (no copy, no sort).
                let mut seen = vec![false; char::MAX as usize + 1];
                train.for_each_block(65_536, |block| {
                    for &c in block {
                        seen[c as usize] = true;
                    }
                });
                let points: Vec<u32> = (0..seen.len() as u32)
                    .filter(|&c| seen[c as usize])
                    .collect();
                let mut index: HashMap<u32, u32> = points
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (c, i as u32))
                    .collect();
                let mut chars: Vec<char> =
                    points.iter().filter_map(|&c| char::from_u32(c)).collect();
                let replacement = u32::from('\u{FFFD}');
                if validation.iter().any(|c| !index.contains_key(&c))
                    && !index.contains_key(&replacement)
                {
                    index.insert(replacement, chars.len() as u32);
                    chars.push('\u{FFFD}');
                }
                // Every code point not in the index has the replacement token (added above
                // whenever the validation split needs it).
                let unknown = index.get(&replacement).copied().unwrap_or(0);
                let map = |s: Tokens| -> Tokens {
                    s.iter()
                        .map(|c| index.get(&c).copied().unwrap_or(unknown))
                        .collect::<Vec<u32>>()
                        .into()
                };
                (map(train), map(validation), Vocabulary::Chars { chars })
            }
        };
        if vocab.size() < 2 {
            return Err("the training split holds a single distinct character; a language model needs at least 2".into());
        }
        Ok(Dataset::finish(
            DataKind::Text,
            vocab,
            train,
            validation,
            seq_len,
            source.to_string(),
            None,
        ))
    }

    /// A text data set of ids below `size` that stand for nothing: benchmarks of the
    /// distillation machinery at a real vocabulary size without a tokenizer or corpus.
    pub fn from_ids(train: Vec<u32>, validation: Vec<u32>, size: u32, context: u32) -> Dataset {
        Dataset::finish(
            DataKind::Text,
            Vocabulary::Ids { size },
            train.into(),
            validation.into(),
            context,
            "ids".into(),
            None,
        )
    }

    /// The token streams of a data set read back where its source is not at hand (a worker
    /// on another machine): text as bare ids, images as pixel tokens. Batches, and so
    /// training, are those of the original; what the tokens stand for is not kept.
    pub fn from_tokens(
        kind: DataKind,
        train: Vec<u32>,
        validation: Vec<u32>,
        vocab_size: u32,
        context: u32,
    ) -> Dataset {
        let vocab = match kind {
            DataKind::Text => Vocabulary::Ids { size: vocab_size },
            DataKind::Image => Vocabulary::Pixels {
                levels: vocab_size.saturating_sub(1),
            },
        };
        Dataset::finish(
            kind,
            vocab,
            train.into(),
            validation.into(),
            context,
            "tokens".into(),
            None,
        )
    }

    fn from_images(
        train: &IdxImages,
        validation: &IdxImages,
        size: u32,
        levels: u32,
        source: String,
    ) -> Dataset {
        let train_tokens = train.tokens(size, levels);
        let val_tokens = validation.tokens(size, levels);
        Dataset::finish(
            DataKind::Image,
            Vocabulary::Pixels { levels },
            train_tokens.into(),
            val_tokens.into(),
            size * size,
            source,
            Some((train.rows, train.cols)),
        )
    }

    fn finish(
        kind: DataKind,
        vocab: Vocabulary,
        train: Tokens,
        validation: Tokens,
        context: u32,
        source: String,
        source_image_size: Option<(u32, u32)>,
    ) -> Dataset {
        let mut h = Sha256::new();
        h.update(serde_json::to_string(&vocab).expect("vocabulary serialises"));
        h.update(context.to_le_bytes());
        let mut bytes = Vec::with_capacity(4 * 65_536);
        for stream in [&train, &validation] {
            h.update((stream.len() as u64).to_le_bytes());
            // Little-endian bytes of each token, hashed 64k tokens at a time.
            stream.for_each_block(65_536, |chunk| {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|t| t.to_le_bytes()));
                h.update(&bytes);
            });
        }
        let fingerprint = genas_space::hex16(h);
        Dataset {
            kind,
            vocab,
            train,
            validation,
            context,
            source,
            fingerprint,
            source_image_size,
            tokens_per_char: None,
        }
    }

    pub fn vocab_size(&self) -> u32 {
        self.vocab.size()
    }

    /// The begin-of-image token for image data.
    pub fn bos(&self) -> Option<u32> {
        match self.vocab {
            Vocabulary::Pixels { levels } => Some(levels),
            _ => None,
        }
    }

    pub fn summary(&self) -> DataSummary {
        let c = self.context as usize;
        DataSummary {
            kind: self.kind,
            source: self.source.clone(),
            vocab_size: self.vocab_size(),
            vocabulary: self.vocab.describe(),
            context: self.context,
            train_tokens: self.train.len(),
            validation_tokens: self.validation.len(),
            train_sequences: self.train.len() / c,
            validation_sequences: self.validation.len() / c,
            fingerprint: self.fingerprint.clone(),
            source_image_size: self.source_image_size,
            tokens_per_char: self.tokens_per_char,
        }
    }
}

pub use genas_engine::Batch;

impl genas_engine::TrainBatches for Dataset {
    fn train_batch(&self, b: usize, rng: &mut genas_space::Rng) -> Batch {
        Dataset::train_batch(self, b, rng)
    }
}

/// Which split a batch is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Validation,
}

impl Dataset {
    fn stream(&self, split: Split) -> &Tokens {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
        }
    }

    /// Number of sequences a split offers: images, or start offsets for text.
    fn positions(&self, split: Split) -> usize {
        let s = self.stream(split);
        let t = self.context as usize;
        match self.kind {
            DataKind::Image => s.len() / t,
            DataKind::Text => s.len().saturating_sub(t),
        }
    }

    /// Sequence `k` of a split: text from offset k, or image k after a begin token.
    fn sequence(&self, split: Split, k: usize, inputs: &mut Vec<u32>, targets: &mut Vec<u32>) {
        let s = self.stream(split);
        let t = self.context as usize;
        match self.bos() {
            Some(bos) => {
                inputs.push(bos);
                s.extend_into(k * t, t - 1, inputs);
                s.extend_into(k * t, t, targets);
            }
            None => {
                s.extend_into(k, t, inputs);
                s.extend_into(k + 1, t, targets);
            }
        }
    }

    /// The training schedule of `steps` batches of `b` sequences drawn in turn from
    /// `Rng::seed_from_u64(seed)`: what training (`engine::train`), brief and full
    /// distillation with that seed step through.
    pub fn train_schedule(&self, b: usize, steps: u32, seed: u64) -> Vec<Batch> {
        let mut rng = genas_space::Rng::seed_from_u64(seed);
        (0..steps).map(|_| self.train_batch(b, &mut rng)).collect()
    }

    /// The sequences (indices into the training positions) of the `steps` batches of `b`
    /// that `train_schedule(b, steps, seed)` and a distillation seeded with `seed` draw, step
    /// after step: what `genas export --with-training` hands to `train.py` as genas's batch
    /// order.
    pub fn train_indices(&self, b: usize, steps: u32, seed: u64) -> Vec<u32> {
        let mut rng = genas_space::Rng::seed_from_u64(seed);
        let n = self.positions(Split::Train);
        // Drawn as `train_batch` draws them (its test holds the two together).
        (0..steps as usize * b)
            .map(|_| rng.index(n) as u32)
            .collect()
    }

    /// A batch of `b` training sequences at random positions drawn from `rng`.
    pub fn train_batch(&self, b: usize, rng: &mut genas_space::Rng) -> Batch {
        let n = self.positions(Split::Train);
        let t = self.context as usize;
        let (mut inputs, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        for _ in 0..b {
            let k = rng.index(n);
            self.sequence(Split::Train, k, &mut inputs, &mut targets);
        }
        Batch {
            b,
            t,
            inputs,
            targets,
        }
    }

    /// Whole sequences `split` holds (images: its positions).
    fn available_sequences(&self, split: Split) -> usize {
        match self.kind {
            DataKind::Image => self.positions(split),
            DataKind::Text => self.stream(split).len().saturating_sub(1) / self.context as usize,
        }
    }

    /// How many sequences `eval_batches(split, _, max_sequences)` reads.
    pub fn eval_sequences(&self, split: Split, max_sequences: usize) -> usize {
        let available = self.available_sequences(split);
        available.min(max_sequences).max(1).min(available)
    }

    /// A fixed evaluation set: up to `max_sequences` evenly spaced, non-overlapping sequences of
    /// the split (text: every token predicted at most once), in batches of at most `b`.
    pub fn eval_batches(&self, split: Split, b: usize, max_sequences: usize) -> Vec<Batch> {
        let t = self.context as usize;
        let available = self.available_sequences(split);
        let count = self.eval_sequences(split, max_sequences);
        let mut out = Vec::new();
        let mut start = 0;
        while start < count {
            let nb = b.min(count - start);
            let (mut inputs, mut targets) =
                (Vec::with_capacity(nb * t), Vec::with_capacity(nb * t));
            for j in start..start + nb {
                // Evenly spaced over what is available.
                let slot = j * available / count;
                let k = if self.kind == DataKind::Text {
                    slot * t
                } else {
                    slot
                };
                self.sequence(split, k, &mut inputs, &mut targets);
            }
            out.push(Batch {
                b: nb,
                t,
                inputs,
                targets,
            });
            start += nb;
        }
        out
    }

    /// Nats → the unit a user reads: bits per character (char text), per byte, or per pixel
    /// ("bits/dim" for images).
    pub fn bits_unit(&self) -> &'static str {
        if self.tokens_per_char.is_some() {
            return "bits/char";
        }
        match (&self.kind, &self.vocab) {
            (DataKind::Image, _) => "bits/dim",
            (_, Vocabulary::Bytes) => "bits/byte",
            _ => "bits/char",
        }
    }
}

impl Dataset {
    /// A loss in nats per token in the unit of [`Dataset::bits_unit`]: bits per token, times
    /// tokens per character for a Hugging Face tokenizer.
    pub fn bits(&self, nats: f64) -> f64 {
        nats / std::f64::consts::LN_2 * self.tokens_per_char.unwrap_or(1.0)
    }
}

/// The token `exp`'s corpus puts after every document under the Hugging Face tokenizer
/// `tok`: `[data] eos_token` (none where it is empty), else the tokenizer's end of text.
pub fn eos_token(exp: &Experiment, tok: &HfTokenizer) -> Result<Option<u32>, DataError> {
    Ok(match exp.data.eos_token.as_deref() {
        Some("") => None,
        Some(name) => Some(tok.token_id(name).ok_or_else(|| DataError::Bad {
            path: exp.source.display().to_string(),
            reason: format!(
                "[data] eos_token {name:?} is not a token of {}",
                tok.path.display()
            ),
        })?),
        None => tok.end_of_text(),
    })
}

/// A text token stream split into training and validation blocks, or why it is too small.
fn split_text(
    stream: &Tokens,
    seq_len: u32,
    validation_fraction: f64,
) -> Result<(Tokens, Tokens), String> {
    let need = seq_len as usize + 1;
    split_blocks(stream, need, validation_fraction).ok_or_else(|| {
        format!(
            "corpus too small: {} tokens cannot give training and validation splits of at least {need} tokens each",
            stream.len()
        )
    })
}

/// Reads a corpus (a UTF-8 text file, or a folder of text files in name order) whole, its
/// documents joined by `\n`: [`Corpus::read_string`].
pub fn read_text_source(path: &Path) -> Result<String, DataError> {
    Corpus::open(path, None)?.read_string()
}

/// Splits a stream into blocks and returns (training, validation) views of it. Validation
/// takes `round(blocks · fraction)` (at least one) evenly spaced blocks. Blocks hold
/// min(4096, len / 20) tokens but at least `min_len`; `None` when a split would be shorter.
fn split_blocks(stream: &Tokens, min_len: usize, fraction: f64) -> Option<(Tokens, Tokens)> {
    let len = stream.len();
    let block = (len / 20).clamp(min_len, 4096.max(min_len));
    let blocks = len.div_ceil(block);
    let n_val = ((blocks as f64 * fraction).round() as usize).max(1);
    if n_val >= blocks {
        return None;
    }
    let is_val = evenly_spaced(blocks, n_val);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, &v) in is_val.iter().enumerate() {
        let start = i * block;
        let part = (start, block.min(len - start));
        if v {
            val.push(part);
        } else {
            train.push(part);
        }
    }
    let (train, val) = (stream.select(&train), stream.select(&val));
    (train.len() >= min_len && val.len() >= min_len).then_some((train, val))
}

/// `k` of `n` positions, spread evenly: position ⌊(j + ½)·n / k⌋ for j in 0..k.
fn evenly_spaced(n: usize, k: usize) -> Vec<bool> {
    let mut marks = vec![false; n];
    for j in 0..k {
        marks[((2 * j + 1) * n) / (2 * k)] = true;
    }
    marks
}

/// Unsigned-byte images read from an IDX file.
#[derive(Clone, Debug)]
pub struct IdxImages {
    pub count: usize,
    pub rows: u32,
    pub cols: u32,
    pub pixels: Vec<u8>,
}

impl IdxImages {
    fn image(&self, i: usize) -> &[u8] {
        let n = (self.rows * self.cols) as usize;
        &self.pixels[i * n..(i + 1) * n]
    }

    fn truncate_images(&mut self, max: usize) {
        if self.count > max {
            self.count = max;
            self.pixels.truncate(max * (self.rows * self.cols) as usize);
        }
    }

    /// All images resampled to size × size and quantised to `levels`, concatenated.
    pub fn tokens(&self, size: u32, levels: u32) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.count * (size * size) as usize);
        for i in 0..self.count {
            for v in resample(self.image(i), self.rows, self.cols, size) {
                out.push(quantise(v, levels));
            }
        }
        out
    }
}

/// Gray level of an intensity in [0, 255]: ⌊v · levels / 256⌋, clamped to levels − 1.
pub fn quantise(v: f32, levels: u32) -> u32 {
    ((v * levels as f32 / 256.0) as u32).min(levels - 1)
}

/// The intensity a gray level stands for (centre of its bin), for rendering.
pub fn dequantise(level: u32, levels: u32) -> u8 {
    (((level as f32 + 0.5) * 256.0 / levels as f32).floor() as u32).min(255) as u8
}

/// Area-average resampling of a rows × cols image to size × size: every output pixel averages
/// the source area it covers, with fractional weights at its edges.
pub fn resample(img: &[u8], rows: u32, cols: u32, size: u32) -> Vec<f32> {
    let weights = |src: u32| -> Vec<Vec<(usize, f32)>> {
        let scale = src as f64 / size as f64;
        (0..size)
            .map(|o| {
                let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
                let mut w = Vec::new();
                let mut p = a.floor() as usize;
                while (p as f64) < b && p < src as usize {
                    let lo = a.max(p as f64);
                    let hi = b.min(p as f64 + 1.0);
                    if hi > lo {
                        w.push((p, ((hi - lo) / scale) as f32));
                    }
                    p += 1;
                }
                w
            })
            .collect()
    };
    let (wr, wc) = (weights(rows), weights(cols));
    let mut out = Vec::with_capacity((size * size) as usize);
    for r in &wr {
        for c in &wc {
            let mut acc = 0.0f32;
            for &(y, wy) in r {
                for &(x, wx) in c {
                    acc += wy * wx * img[y * cols as usize + x] as f32;
                }
            }
            out.push(acc);
        }
    }
    out
}

/// Reads an IDX file of unsigned-byte images (magic 0x00000803: count × rows × cols), plain or
/// gzip-compressed (as MNIST and Fashion-MNIST are distributed; recognised by its magic bytes).
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let raw = read(path)?;
    decode_idx_images(&raw, MAX_IDX_BYTES).map_err(|reason| bad(path, reason))
}

/// The most bytes an IDX file may hold once decompressed: 4 GiB.
pub const MAX_IDX_BYTES: u64 = 4 << 30;

/// Parses IDX image bytes, gunzipping them first when they are a gzip stream; a stream that
/// inflates past `max_bytes` (a corrupt or hostile file) is refused instead of filling
/// memory.
pub fn decode_idx_images(raw: &[u8], max_bytes: u64) -> Result<IdxImages, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return parse_idx_images(raw);
    }
    let mut out = Vec::new();
    let limited = std::io::Read::take(flate2::read::GzDecoder::new(raw), max_bytes + 1);
    std::io::Read::read_to_end(&mut { limited }, &mut out)
        .map_err(|e| format!("corrupt gzip data: {e}"))?;
    if out.len() as u64 > max_bytes {
        return Err(format!(
            "the gzip stream inflates past {max_bytes} bytes, more than an IDX image file genas reads"
        ).into());
    }
    parse_idx_images(&out)
}

/// Parses IDX image bytes; the error says what is wrong with the header or body.
pub fn parse_idx_images(bytes: &[u8]) -> Result<IdxImages, DataError> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (the first two bytes of an IDX header are zero)".into());
    }
    let (kind, ndims) = (bytes[2], bytes[3] as usize);
    if kind != 0x08 {
        let name = match kind {
            0x09 => "signed byte",
            0x0B => "short",
            0x0C => "int",
            0x0D => "float",
            0x0E => "double",
            _ => "unknown",
        };
        return Err(format!("IDX element type 0x{kind:02X} ({name}) is not supported; images must be unsigned bytes (0x08)").into());
    }
    if ndims != 3 {
        return Err(format!(
            "IDX file has {ndims} dimension(s); images need 3 (count, rows, cols)"
        )
        .into());
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format!("truncated IDX header: {} bytes, need {header}", bytes.len()).into());
    }
    let dim = |i: usize| {
        u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
    };
    let (count, rows, cols) = (dim(0), dim(1), dim(2));
    if count == 0 || rows == 0 || cols == 0 {
        return Err(format!(
            "IDX header describes {count} images of {rows}×{cols}: nothing to train on"
        )
        .into());
    }
    let body = count
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .ok_or("IDX header dimensions overflow")?;
    let have = bytes.len() - header;
    if have < body {
        return Err(format!(
            "truncated IDX body: the header promises {count} images of {rows}×{cols} ({body} bytes), the file holds {have}"
        ).into());
    }
    if have > body {
        return Err(format!(
            "{} bytes follow the {count} images the IDX header describes",
            have - body
        )
        .into());
    }
    Ok(IdxImages {
        count,
        rows: rows as u32,
        cols: cols as u32,
        pixels: bytes[header..].to_vec(),
    })
}

/// Evenly spaced images form the validation split (see `split_blocks`).
fn split_images(all: IdxImages, fraction: f64) -> Result<(IdxImages, IdxImages), String> {
    let n_val = ((all.count as f64 * fraction).round() as usize).max(1);
    if n_val >= all.count {
        return Err(format!(
            "{} image(s) cannot give both a training and a validation split",
            all.count
        ));
    }
    let is_val = evenly_spaced(all.count, n_val);
    let mut train = IdxImages {
        count: 0,
        rows: all.rows,
        cols: all.cols,
        pixels: Vec::new(),
    };
    let mut val = train.clone();
    for (i, &v) in is_val.iter().enumerate() {
        let target = if v { &mut val } else { &mut train };
        target.pixels.extend_from_slice(all.image(i));
        target.count += 1;
    }
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_training_indices_are_the_sequences_of_the_schedule() {
        let text: String = (0..3000)
            .map(|i| ((i * 7 % 26) as u8 + b'a') as char)
            .collect();
        let ds = Dataset::from_text(&text, Tokenizer::Char, 16, 0.1, "t").unwrap();
        let (b, steps, seed) = (3, 5, 42);
        let schedule = ds.train_schedule(b, steps, seed);
        let indices = ds.train_indices(b, steps, seed);
        assert_eq!(indices.len(), b * steps as usize);
        for (s, batch) in schedule.iter().enumerate() {
            let (mut inputs, mut targets) = (Vec::new(), Vec::new());
            for &k in &indices[s * b..(s + 1) * b] {
                ds.sequence(Split::Train, k as usize, &mut inputs, &mut targets);
            }
            assert_eq!(batch.inputs, inputs, "step {s}");
            assert_eq!(batch.targets, targets, "step {s}");
        }
        assert_ne!(indices, ds.train_indices(b, steps, seed + 1));
    }

    #[test]
    fn evenly_spaced_marks_k_of_n() {
        let m = evenly_spaced(20, 2);
        assert_eq!(m.iter().filter(|x| **x).count(), 2);
        assert!(m[5] && m[15]);
        assert_eq!(evenly_spaced(3, 1), vec![false, true, false]);
    }

    #[test]
    fn resample_by_two_averages_2x2_blocks() {
        let img = [0u8, 100, 200, 40, 10, 30, 50, 60, 1, 2, 3, 4, 5, 6, 7, 8];
        let out = resample(&img, 4, 4, 2);
        assert_eq!(
            out,
            vec![
                (0.0 + 100.0 + 10.0 + 30.0) / 4.0,
                (200.0 + 40.0 + 50.0 + 60.0) / 4.0,
                3.5,
                5.5
            ]
        );
    }

    #[test]
    fn resample_to_a_non_divisor_keeps_the_mean() {
        // 3 → 2: output pixel 0 covers source [0, 1.5): weights 2/3 and 1/3.
        let img = [30u8, 60, 90, 30, 60, 90, 30, 60, 90];
        let out = resample(&img, 3, 3, 2);
        assert!(
            (out[0] - (30.0 * 2.0 / 3.0 + 60.0 / 3.0)).abs() < 1e-4,
            "{out:?}"
        );
        let mean_in = img.iter().map(|&x| x as f32).sum::<f32>() / 9.0;
        let mean_out = out.iter().sum::<f32>() / 4.0;
        assert!((mean_in - mean_out).abs() < 1e-3);
    }

    #[test]
    fn quantise_bins_and_dequantise_centres() {
        assert_eq!(quantise(0.0, 16), 0);
        assert_eq!(quantise(15.9, 16), 0);
        assert_eq!(quantise(16.0, 16), 1);
        assert_eq!(quantise(255.0, 16), 15);
        assert_eq!(dequantise(0, 16), 8);
        assert_eq!(dequantise(15, 16), 248);
        assert_eq!(quantise(dequantise(7, 16) as f32, 16), 7);
    }
}

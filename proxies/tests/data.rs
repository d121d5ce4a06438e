//! The data readers on the shipped corpora and on bad files.

use genas_scoring::data::{dequantise, parse_idx_images, read_text_source};
use genas_scoring::{Dataset, Vocabulary};
use genas_space::{DataConfig, DataKind, Experiment, Tokenizer};
use std::path::{Path, PathBuf};

fn experiments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

fn text_config(seq_len: u32) -> DataConfig {
    DataConfig {
        kind: DataKind::Text,
        path: PathBuf::new(),
        validation_path: None,
        validation_fraction: 0.1,
        seq_len: Some(seq_len),
        tokenizer: Some(Tokenizer::Char),
        image_size: None,
        gray_levels: None,
        max_images: None,
        text_field: None,
        eos_token: None,
    }
}

fn image_config(size: u32, levels: u32) -> DataConfig {
    DataConfig {
        kind: DataKind::Image,
        image_size: Some(size),
        gray_levels: Some(levels),
        seq_len: None,
        tokenizer: None,
        ..text_config(2)
    }
}

fn load_error(cfg: &DataConfig, path: &Path) -> String {
    let msg = Dataset::load_config(cfg, path, None)
        .expect_err("should be rejected")
        .to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        msg.starts_with(&path.display().to_string()) || msg.starts_with("cannot read"),
        "{msg}"
    );
    msg
}

#[test]
fn shakespeare_char_level() {
    let exp = Experiment::from_path(&experiments().join("quick.toml")).unwrap();
    let ds = Dataset::load(&exp).unwrap();
    let corpus = read_text_source(&exp.data_path()).unwrap();
    let n = corpus.chars().count();
    // 42 files of 5,057,198 ASCII bytes joined by 41 newlines.
    assert_eq!(n, 5_057_198 + 41);
    assert_eq!(ds.train.len() + ds.validation.len(), n);
    let frac = ds.validation.len() as f64 / n as f64;
    assert!((frac - 0.05).abs() < 0.002, "{frac}");
    // 84 distinct characters, all present in the training split; no unknown token needed.
    assert_eq!(ds.vocab_size(), 84);
    assert!(ds.train.iter().chain(ds.validation.iter()).all(|t| t < 84));
    // The first block is training data and decodes back to the corpus.
    assert_eq!(
        ds.vocab.decode(&ds.train.slice(0, 4096)),
        corpus.chars().take(4096).collect::<String>()
    );
    assert_eq!(ds.context, 64);
    // Loading twice gives the same fingerprint; another context, another fingerprint.
    assert_eq!(Dataset::load(&exp).unwrap().fingerprint, ds.fingerprint);
    let other = Dataset::from_text(&corpus, Tokenizer::Char, 128, 0.05, "x").unwrap();
    assert_ne!(other.fingerprint, ds.fingerprint);
}

#[test]
fn byte_tokenizer_and_unknown_validation_characters() {
    // 2000 characters → blocks of 2000/20 = 100; validation takes round(20·0.1) = 2 blocks at
    // ⌊(2j+1)·20/4⌋ = 5 and 15, i.e. characters 500..600 and 1500..1600. 'z' sits at 550.
    let mut text: Vec<char> = "ab".repeat(1000).chars().collect();
    text[550] = 'z';
    let text: String = text.into_iter().collect();
    let bytes = Dataset::from_text(&text, Tokenizer::Byte, 8, 0.1, "t").unwrap();
    assert_eq!(bytes.vocab, Vocabulary::Bytes);
    assert_eq!(bytes.vocab_size(), 256);
    assert_eq!(bytes.validation.len(), 200);
    assert_eq!(bytes.validation.get(50), u32::from(b'z'));
    let chars = Dataset::from_text(&text, Tokenizer::Char, 8, 0.1, "t").unwrap();
    let Vocabulary::Chars { chars: v } = &chars.vocab else {
        panic!("char vocabulary")
    };
    assert_eq!(v, &vec!['a', 'b', '\u{FFFD}']);
    assert_eq!(chars.validation.get(50), 2);
    assert_eq!(chars.validation.iter().filter(|&t| t == 2).count(), 1);
    assert!(!chars.train.iter().any(|t| t == 2));
}

#[test]
fn fashion_images_are_resampled_and_quantised() {
    let exp = Experiment::from_path(&experiments().join("fashion.toml")).unwrap();
    let ds = Dataset::load(&exp).unwrap();
    assert_eq!(ds.vocab_size(), 17);
    assert_eq!(ds.bos(), Some(16));
    assert_eq!(ds.context, 196);
    assert_eq!(ds.train.len(), 10_000 * 196);
    assert_eq!(ds.validation.len(), 2_000 * 196);
    assert_eq!(ds.source_image_size, Some((28, 28)));
    // Independent computation for the first training image: 2×2 means, 16 bins of 16.
    let raw = std::fs::read(exp.data_path()).unwrap();
    let img = &raw[16..16 + 784];
    for r in 0..14 {
        for c in 0..14 {
            let sum: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .iter()
                .map(|(dy, dx)| img[(2 * r + dy) * 28 + 2 * c + dx] as u32)
                .sum();
            let expected = ((sum as f32 / 4.0) * 16.0 / 256.0) as u32;
            assert_eq!(ds.train.get(r * 14 + c), expected.min(15), "pixel {r},{c}");
        }
    }
    // A garment is not blank: several gray levels occur.
    let levels: std::collections::HashSet<_> = ds.train.slice(0, 196).into_iter().collect();
    assert!(levels.len() > 4);
    assert_eq!(dequantise(15, 16), 248);
}

#[test]
fn image_split_without_validation_file_and_max_images() {
    let path = experiments().join("data/fashion-mnist/val-2k-images-idx3-ubyte");
    let mut cfg = image_config(7, 4);
    cfg.validation_fraction = 0.25;
    cfg.max_images = Some(100);
    let ds = Dataset::load_config(&cfg, &path, None).unwrap();
    assert_eq!(ds.validation.len(), 500 * 49);
    assert_eq!(ds.train.len(), 100 * 49);
    assert!(ds.train.iter().all(|t| t < 4));
}

#[test]
fn empty_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.txt");
    std::fs::write(&p, "").unwrap();
    assert!(load_error(&text_config(8), &p).ends_with(": the file is empty"));
    std::fs::write(&p, " \n\n\t ").unwrap();
    assert!(load_error(&text_config(8), &p).ends_with(": the file is empty"));
}

#[test]
fn binary_file_given_as_text() {
    let p = experiments().join("data/fashion-mnist/val-2k-labels-idx1-ubyte");
    let msg = load_error(&text_config(8), &p);
    assert!(
        msg.ends_with(": binary data, not text (NUL byte at offset 0)"),
        "{msg}"
    );
}

#[test]
fn latin1_text_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.txt");
    std::fs::write(&p, b"caf\xe9 au lait".repeat(50)).unwrap();
    let msg = load_error(&text_config(8), &p);
    assert!(
        msg.ends_with(": not UTF-8 text (invalid byte at offset 3)"),
        "{msg}"
    );
}

#[test]
fn folder_without_text_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.md"), "hello").unwrap();
    let msg = load_error(&text_config(8), dir.path());
    assert!(
        msg.ends_with(": the folder holds no .txt, .jsonl or .parquet files"),
        "{msg}"
    );
}

#[test]
fn corpus_too_small_for_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.txt");
    std::fs::write(&p, "to be or not to be").unwrap();
    let msg = load_error(&text_config(64), &p);
    assert!(msg.contains("corpus too small: 18 tokens"), "{msg}");
}

#[test]
fn missing_file() {
    let msg = load_error(&text_config(8), Path::new("/no/such/corpus.txt"));
    assert!(msg.starts_with("cannot read /no/such/corpus.txt:"), "{msg}");
}

#[test]
fn text_file_given_as_images() {
    let p = experiments().join("quick.toml");
    let msg = load_error(&image_config(14, 16), &p);
    assert!(
        msg.ends_with("not an IDX file (the first two bytes of an IDX header are zero)"),
        "{msg}"
    );
}

#[test]
fn label_file_given_as_images() {
    let p = experiments().join("data/fashion-mnist/val-2k-labels-idx1-ubyte");
    let msg = load_error(&image_config(14, 16), &p);
    assert!(
        msg.ends_with("IDX file has 1 dimension(s); images need 3 (count, rows, cols)"),
        "{msg}"
    );
}

#[test]
fn idx_header_and_body_errors() {
    let real =
        std::fs::read(experiments().join("data/fashion-mnist/val-2k-images-idx3-ubyte")).unwrap();
    // Truncated body.
    let err = parse_idx_images(&real[..real.len() - 100])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "truncated IDX body: the header promises 2000 images of 28×28 (1568000 bytes), the file holds 1567900");
    // Trailing bytes.
    let mut long = real.clone();
    long.extend_from_slice(&[0; 7]);
    assert_eq!(
        parse_idx_images(&long).unwrap_err().to_string(),
        "7 bytes follow the 2000 images the IDX header describes"
    );
    // Float elements.
    let mut float = real.clone();
    float[2] = 0x0D;
    assert!(parse_idx_images(&float)
        .unwrap_err()
        .to_string()
        .starts_with("IDX element type 0x0D (float) is not supported"));
    // Truncated header, empty, zero images.
    assert!(parse_idx_images(&real[..10])
        .unwrap_err()
        .to_string()
        .starts_with("truncated IDX header"));
    assert_eq!(
        parse_idx_images(&[]).unwrap_err().to_string(),
        "the file is empty"
    );
    let mut zero = real[..16].to_vec();
    zero[4..8].copy_from_slice(&0u32.to_be_bytes());
    assert!(parse_idx_images(&zero)
        .unwrap_err()
        .to_string()
        .contains("nothing to train on"));
    // And the real file parses.
    let ok = parse_idx_images(&real).unwrap();
    assert_eq!((ok.count, ok.rows, ok.cols), (2000, 28, 28));
}

#[test]
fn gzipped_idx_reads_like_the_plain_file() {
    use std::io::Write;
    let plain = experiments().join("data/fashion-mnist/val-2k-images-idx3-ubyte");
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("val-images-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    let compressed = enc.finish().unwrap();
    std::fs::write(&gz, &compressed).unwrap();
    let cfg = image_config(14, 16);
    let a = Dataset::load_config(&cfg, &plain, None).unwrap();
    let b = Dataset::load_config(&cfg, &gz, None).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.fingerprint, b.fingerprint);
    // A cut-off gzip stream is one clear error.
    std::fs::write(&gz, &compressed[..compressed.len() / 2]).unwrap();
    let msg = load_error(&cfg, &gz);
    assert!(msg.contains("corrupt gzip data"), "{msg}");
}

/// A gzip stream that inflates far past what an IDX file may hold is refused, not inflated
/// into memory (a small file can otherwise ask for gigabytes).
#[test]
fn a_gzip_stream_that_inflates_past_the_limit_is_refused() {
    use std::io::Write;
    let mut body = vec![0u8, 0, 8, 3, 0, 0, 0, 64, 0, 0, 0, 128, 0, 0, 0, 128];
    body.resize(16 + 64 * 128 * 128, 0);
    let mut gz = Vec::new();
    let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::best());
    e.write_all(&body).unwrap();
    e.finish().unwrap();
    assert!(gz.len() < 10_000, "{}", gz.len());
    let err = genas_scoring::data::decode_idx_images(&gz, 100_000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inflates past 100000 bytes"), "{err}");
    // Under the limit the same stream reads.
    let images = genas_scoring::data::decode_idx_images(&gz, 2_000_000).unwrap();
    assert_eq!((images.count, images.rows, images.cols), (64, 128, 128));
}

// ---------------------------------------------------------------------------------------------
// Corpora as streams of documents: text, JSON Lines and Parquet.

use genas_scoring::corpus::{Corpus, Piece};

/// The documents of a corpus, as `Corpus::read` hands them over (pieces joined).
fn documents(c: &Corpus) -> Vec<String> {
    let mut docs = vec![String::new()];
    c.read(&mut |p, _| {
        match p {
            Piece::Text(t) => docs.last_mut().unwrap().push_str(t),
            Piece::End => docs.push(String::new()),
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(docs.pop().as_deref(), Some(""), "the last document ended");
    docs
}

fn corpus_fixture(name: &str) -> PathBuf {
    experiments().join("fixtures/corpus").join(name)
}

#[test]
fn parquet_written_by_pyarrow_and_json_lines_give_the_same_documents() {
    // The fixture script wrote the same 62 documents three ways; Parquet holds a null and an
    // empty row besides, in row groups of 16.
    // The documents as Python's json module wrote them, read here by serde_json.
    let want: Vec<String> = std::fs::read_to_string(corpus_fixture("docs.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    let parquet = Corpus::open(&corpus_fixture("docs.parquet"), None).unwrap();
    let jsonl = Corpus::open(&corpus_fixture("docs.jsonl"), Some("text")).unwrap();
    let (p, j) = (documents(&parquet), documents(&jsonl));
    assert_eq!(p.len(), 62);
    assert_eq!(p, want);
    assert_eq!(j, want);
    assert!(p[61].contains("日本語") && p[60].contains("Grüße"));
    // Documents joined by a newline: the text a character vocabulary is built from.
    let joined = std::fs::read_to_string(corpus_fixture("docs.txt")).unwrap();
    assert_eq!(parquet.read_string().unwrap(), joined);
    assert_eq!(joined, p.join("\n"));
    // A character data set reads any of them.
    let mut cfg = text_config(16);
    cfg.path = corpus_fixture("docs.parquet");
    let a = Dataset::load_config(&cfg, &cfg.path, None).unwrap();
    assert!(a.vocab_size() > 40);
    // Fingerprints follow the bytes: two files of the same documents differ.
    assert_ne!(parquet.fingerprint().unwrap(), jsonl.fingerprint().unwrap());
    assert_eq!(
        parquet.fingerprint().unwrap(),
        Corpus::open(&corpus_fixture("docs.parquet"), None)
            .unwrap()
            .fingerprint()
            .unwrap()
    );
}

#[test]
fn a_folder_mixes_formats_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(corpus_fixture("docs.jsonl"), dir.path().join("b.jsonl")).unwrap();
    std::fs::copy(corpus_fixture("docs.parquet"), dir.path().join("c.parquet")).unwrap();
    std::fs::write(dir.path().join("a.txt"), "first\nfile").unwrap();
    std::fs::write(dir.path().join("ignored.csv"), "x,y").unwrap();
    let docs = documents(&Corpus::open(dir.path(), None).unwrap());
    assert_eq!(docs.len(), 1 + 62 + 62);
    assert_eq!(docs[0], "first\nfile");
}

#[test]
fn a_long_text_file_streams_across_blocks_and_characters() {
    // More than one 4 MiB block, of 1-, 2-, 3- and 4-byte characters: blocks end inside
    // characters, which are carried over whole.
    let unit = "a é 語 🦀\n";
    let text = unit.repeat((9 << 20) / unit.len());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long.txt");
    std::fs::write(&p, &text).unwrap();
    let c = Corpus::open(&p, None).unwrap();
    let mut pieces = 0;
    let mut got = String::new();
    c.read(&mut |piece, _| {
        if let Piece::Text(t) = piece {
            pieces += 1;
            got.push_str(t);
        }
        Ok(())
    })
    .unwrap();
    assert!(pieces >= 3, "{pieces}");
    assert_eq!(got, text);
    // An invalid byte deep in the file is named by its offset.
    let mut at = (5 << 20) + 1;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    let mut bytes = text.into_bytes();
    bytes[at] = 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let e = Corpus::open(&p, None)
        .unwrap()
        .read_string()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not UTF-8") && e.contains(&format!("offset {at}")),
        "{e}"
    );
}

#[test]
fn bad_json_lines_and_parquet_files_are_one_line_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let err = |name: &str, body: &[u8], field: Option<&str>| -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let e = Corpus::open(&p, field)
            .unwrap()
            .read_string()
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains(name), "{e}");
        e
    };
    let e = err(
        "a.jsonl",
        b"{\"text\": \"x\"}\n{\"body\": \"y\", \"id\": 1}\n",
        None,
    );
    assert!(
        e.contains("line 2 has no \"text\" field (its fields: body, id)"),
        "{e}"
    );
    let e = err("b.jsonl", b"{\"text\": 3}\n", None);
    assert!(
        e.contains("line 1: \"text\" is a number, not a string"),
        "{e}"
    );
    let e = err("c.jsonl", b"not json\n", None);
    assert!(e.contains("line 1 is not a JSON object"), "{e}");
    let e = err("d.jsonl", b"{\"text\": null}\n\n", None);
    assert!(e.contains("no record holds text"), "{e}");
    let e = err("e.parquet", b"PAR1 not really", None);
    assert!(e.contains("not a Parquet file"), "{e}");
    let good = std::fs::read(corpus_fixture("docs.parquet")).unwrap();
    let e = err("f.parquet", &good, Some("body"));
    assert!(
        e.contains("no column \"body\" (its columns: id, text)"),
        "{e}"
    );
    let e = err("g.parquet", &good, Some("id"));
    assert!(e.contains("does not hold one string per row"), "{e}");
    // A cut-off Parquet file (its footer gone) and one with damaged pages.
    let e = err("h.parquet", &good[..good.len() / 2], None);
    assert!(e.contains("Parquet"), "{e}");
    let mut damaged = good.clone();
    for b in &mut damaged[100..2000] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let e = err("i.parquet", &damaged, None);
    assert!(e.contains("Parquet") || e.contains("UTF-8"), "{e}");
    // A text field of an image experiment, and an end-of-text token without a tokenizer,
    // are refused where the experiment is read.
    let exp = |extra: &str| {
        let p = dir.path().join("e.toml");
        let base = std::fs::read_to_string(experiments().join("quick.toml")).unwrap();
        std::fs::write(&p, base.replacen("[data]", &format!("[data]\n{extra}"), 1)).unwrap();
        Experiment::from_path(&p).unwrap_err().to_string()
    };
    assert!(exp("eos_token = \"</s>\"").contains("data.eos_token"));
    assert!(exp("text_field = \"\"").contains("data.text_field"));
}

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
    assert!(ds.train.iter().chain(&ds.validation).all(|&t| t < 84));
    // The first block is training data and decodes back to the corpus.
    assert_eq!(
        ds.vocab.decode(&ds.train[..4096]),
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
    assert_eq!(bytes.validation[50], u32::from(b'z'));
    let chars = Dataset::from_text(&text, Tokenizer::Char, 8, 0.1, "t").unwrap();
    let Vocabulary::Chars { chars: v } = &chars.vocab else {
        panic!("char vocabulary")
    };
    assert_eq!(v, &vec!['a', 'b', '\u{FFFD}']);
    assert_eq!(chars.validation[50], 2);
    assert_eq!(chars.validation.iter().filter(|&&t| t == 2).count(), 1);
    assert!(!chars.train.contains(&2));
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
            assert_eq!(ds.train[r * 14 + c], expected.min(15), "pixel {r},{c}");
        }
    }
    // A garment is not blank: several gray levels occur.
    let levels: std::collections::HashSet<_> = ds.train[..196].iter().collect();
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
    assert!(ds.train.iter().all(|&t| t < 4));
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
    assert!(msg.ends_with(": the folder holds no .txt files"), "{msg}");
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

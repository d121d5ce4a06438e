//! The vocabulary an export carries: `genas_vocab.json`, and for text a `tokenizer.json`
//! (with `tokenizer_config.json`) that `transformers` loads.

use super::*;
use serde_json::{json, Value};

pub(super) fn vocab_json(v: &Vocab) -> Value {
    match v {
        Vocab::Chars(chars) => json!({
            "kind": "chars",
            "tokens": chars.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        }),
        Vocab::Bytes => json!({"kind": "bytes", "tokens": 256}),
        Vocab::Tokenizer {
            sha256, entries, ..
        } => json!({
            "kind": "tokenizer",
            "file": "tokenizer.json",
            "sha256": sha256,
            "entries": entries,
        }),
        Vocab::Pixels { levels } => json!({
            "kind": "pixels",
            "levels": levels,
            "begin_of_image": levels,
            "meaning": "token k < levels is gray level k (0 black, levels - 1 white); token `levels` begins an image, whose pixels follow row by row",
        }),
    }
}

/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode`): printable
/// Latin-1 bytes stand for themselves, the others for U+0100 onwards in byte order.
pub(super) fn byte_level_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("a valid code point")
}

/// A `tokenizers` tokenizer that maps text to genas's tokens: a BPE model without merges
/// over single characters (or GPT-2 byte-level characters), so every character (byte) is
/// one token.
pub(super) fn tokenizer_json(v: &Vocab) -> Option<Value> {
    let (vocab, pre, decoder): (serde_json::Map<String, Value>, Value, Value) = match v {
        Vocab::Chars(chars) => (
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), Value::from(i)))
                .collect(),
            Value::Null,
            json!({"type": "Fuse"}),
        ),
        Vocab::Bytes => (
            (0..=255u8)
                .map(|b| (byte_level_char(b).to_string(), Value::from(b)))
                .collect(),
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}),
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}),
        ),
        Vocab::Pixels { .. } | Vocab::Tokenizer { .. } => return None,
    };
    Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": [],
        },
    }))
}

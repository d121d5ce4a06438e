"""Makes the scale check's teacher: a LlamaForCausalLM of SmolLM2-135M's exact shape, weights
drawn (not trained), and a byte-level BPE tokenizer of its vocabulary trained on the shipped
Shakespeare corpus, written with transformers' `save_pretrained` as a published checkpoint is.

    python3 experiments/scale/make_teacher.py OUT_DIR [--context 2048] [--hidden 576 --layers 30
        --heads 9 --kv-heads 3 --intermediate 1536 --vocab 49152]

Default shape (SmolLM2-135M's config.json): hidden 576, 30 layers, 9 heads over 3 key/value heads,
intermediate 1536, vocabulary 49,152, tied embeddings, rope_theta 100,000, RMSNorm eps 1e-5,
saved in bfloat16 (about 269 MB). Nothing is downloaded; the weights are drawn from seed 0.
The other options make the smaller teachers of the memory table (memory.sh).
Needs torch, transformers and tokenizers (the venv .ci/run makes has them).
"""

import argparse
import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "shakespeare"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--vocab", type=int, default=49152)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        # At 256 entries the byte alphabet fills the vocabulary: no end-of-text token then.
        special_tokens=["<|endoftext|>"] if args.vocab > 256 else [],
        show_progress=False,
    )
    tok.train(sorted(str(p) for p in DATA.glob("*.txt")), trainer)
    tok.save(str(out / "tokenizer.json"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.context,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        hidden_act="silu",
        bos_token_id=0,
        eos_token_id=0,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n:,} parameters, tokenizer of {tok.get_vocab_size():,} entries")


if __name__ == "__main__":
    main()

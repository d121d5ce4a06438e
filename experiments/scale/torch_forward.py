"""PyTorch CPU's forward throughput on a checkpoint, as `genas teacher import` measures its own:
float32, no gradients, batches of max(1, 4096 // seq_len) sequences of seq_len random tokens,
the median of 5 timed passes after one warm-up, on THREADS threads.

    python3 experiments/scale/torch_forward.py CHECKPOINT_DIR SEQ_LEN THREADS

Prints one line: `torch_tokens_per_s N`.
"""

import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    path, t, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    b = max(1, 4096 // t)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (b, t), generator=g)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(5):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    print(f"torch_tokens_per_s {b * t / statistics.median(times):.1f}")


if __name__ == "__main__":
    main()

"""Bytes autograd keeps for one micro-batch of a genas model, as the runner trains it.

usage: python saved_activations.py REPO CASES.json
CASES.json: a list of {"arch": architecture.json's contents, "b": sequences, "t": positions,
"targets": "hard" | "dense" | k (top-k), "options": the runner's options}. Prints a JSON
list: for each case the bytes of every distinct storage that `saved_tensors_hooks` sees
packed during the forward pass and loss (parameters and buffers left out). Read by the test
`the_device_memory_model_counts_what_autograd_saves` against genas's device memory model.
"""

import json
import sys

import torch


def main(repo, cases_path):
    sys.path.insert(0, f"{repo}/store/interop/src/export")
    sys.path.insert(0, f"{repo}/store/interop/src/runner")
    import model as M
    import runner as R
    torch.manual_seed(0)
    with open(cases_path) as f:
        cases = json.load(f)
    out = []
    for case in cases:
        arch, b, t = case["arch"], case["b"], case["t"]
        m = M.GenasLM(arch).train()
        opts = R.Options(case["options"], "cpu")
        m.checkpointing = opts.checkpointing
        held = {p.untyped_storage().data_ptr() for p in m.parameters()}
        held |= {q.untyped_storage().data_ptr() for q in m.buffers()}
        v, n = arch["vocab_size"], b * t
        x = torch.randint(0, v, (b, t))
        y = torch.randint(0, v, (n,))
        kind = case["targets"]
        if kind == "hard":
            tg = None
        elif kind == "dense":
            tg = R.Targets(v, p=torch.softmax(torch.randn(n, v), -1))
        else:
            k = int(kind)
            tg = R.Targets(v, index=torch.randint(0, v, (n, k)),
                           prob=torch.softmax(torch.randn(n, k), -1) * 0.9)
        seen = {}

        def pack(x):
            s = x.untyped_storage()
            if s.data_ptr() not in held:
                seen[s.data_ptr()] = s.nbytes()
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            with opts.autocast():
                h = m.hidden(x).reshape(n, -1)
                loss = R.loss_sum(h, m.head(), y, tg, 2.0, 0.5, R.chunk_rows(n, v, opts.loss_rows))
        loss.backward()
        out.append(sum(seen.values()))
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python saved_activations.py REPO CASES.json")
    main(sys.argv[1], sys.argv[2])

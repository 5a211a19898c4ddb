"""A long run of a small transformer with each state format and param precision.

    python benchmarks/formats_long_run.py [--steps 5000] [--runs f32,8bit,bf16-state,bf16,bf16-sr]

A two-layer causal transformer (d=64, 4 heads) predicts the next character of the
arena's generated text (``chars_mlp``'s data) with AdamW, batch 64. Runs:

- ``f32``: float32 params and state (the reference);
- ``8bit``, ``bf16-state``: float32 params, Adam's state in 8-bit / bfloat16;
- ``bf16``: bfloat16 params (and state), round to nearest — small updates are lost;
- ``bf16-sr``: bfloat16 params written with ``stochastic_rounding=True``.

Prints the training loss (mean of the last 100 steps) every 500 steps and whether the
run stayed finite, as a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch
from torch import nn

import descent
from descent.arena.tasks import builtin

RUNS = ("f32", "8bit", "bf16-state", "bf16", "bf16-sr")


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int, context: int, d: int = 64, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        return self.head(self.body(h, mask=self.mask, is_causal=True)[:, -1])


def run(kind: str, steps: int, seed: int = 0) -> list[float]:
    train, _ = builtin.chars()
    x, y = train.tensors[0], train.tensors[1]
    vocab = int(max(x.max(), y.max())) + 1
    torch.manual_seed(seed)
    model = TinyTransformer(vocab, x.shape[1])
    dtype = torch.bfloat16 if kind in ("bf16", "bf16-sr") else torch.float32
    model = model.to(dtype)
    fmt = {"8bit": "8bit", "bf16-state": "bfloat16"}.get(kind)
    opt = descent.AdamW(
        model.parameters(), lr=1e-3, weight_decay=0.01, state_dtype=fmt, stochastic_rounding=kind == "bf16-sr"
    )
    gen = torch.Generator().manual_seed(seed)
    losses, marks = [], []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]).float(), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 500 == 0:
            marks.append(sum(losses[-100:]) / 100)
            print(f"  {kind} {step}: {marks[-1]:.4f}", file=sys.stderr, flush=True)
        if not math.isfinite(losses[-1]):
            marks.append(math.nan)
            break
    return marks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--runs", default=",".join(RUNS))
    args = parser.parse_args(argv)
    os.environ.setdefault("DESCENT_BUILD", "0")  # kernels from the cache, else eager (same numbers)
    kinds = args.runs.split(",")
    results = {k: run(k, args.steps) for k in kinds}
    width = max(len(v) for v in results.values())
    print("| step | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for i in range(width):
        cells = [f"{v[i]:.4f}" if i < len(v) else "diverged" for v in results.values()]
        print(f"| {(i + 1) * 500} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

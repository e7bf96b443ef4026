"""Tokens/s of the executor's two in-process rollout loops side by side: hf-eager
(`planner.executor.generate`, a dynamic KV cache) and hf-static (`planner.executor.rollout.static`,
transformers' StaticCache; `--compile` also compiles the decode step, as on a GPU by default).

    .venv/bin/python bench/static_decode.py --hidden 256 --layers 4 --batch 4 --prompt 32 --completion 64

Random weights (a Llama config of the given size, fp32), the same seed for both loops; each loop is
timed `--repeats` times after one warm-up call and the best time is kept. Prints one line per loop
and the static/eager ratio; also checks that both drew the same tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers")
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size")
    ap.add_argument("--batch", type=int, default=4, help="sequences per call")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens")
    ap.add_argument("--completion", type=int, default=64, help="generated tokens")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per loop (best kept)")
    ap.add_argument("--compile", action="store_true", help="compile the static loop's decode step (torch.compile, reduce-overhead)")
    a = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from planner.executor.data import Batch
    from planner.executor.generate import generate
    from planner.executor.rollout.static import generate_static

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=4 * a.hidden, num_hidden_layers=a.layers,
                      num_attention_heads=max(1, a.hidden // 64), num_key_value_heads=max(1, a.hidden // 128),
                      max_position_embeddings=a.prompt + a.completion)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()
    ids = torch.randint(1, a.vocab, (a.batch, a.prompt + a.completion), generator=torch.Generator().manual_seed(1))
    batch = Batch(ids, torch.ones_like(ids), ids[:, a.prompt:].clone())
    loops = {"hf-eager": lambda: generate(model, batch, a.prompt, 1.0, 7, True),
             "hf-static": lambda: generate_static(model, batch, a.prompt, 1.0, 7, compile_step=a.compile)}
    rate, out = {}, {}
    for name, fn in loops.items():
        out[name] = fn()  # warm-up (and compilation)
        best = min(_timed(fn) for _ in range(a.repeats))
        rate[name] = a.batch * a.completion / best
        print(f"{name:10s} {rate[name]:10.1f} tokens/s  ({best:.3f} s for {a.batch} x {a.completion} tokens, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads{', compiled step' if name == 'hf-static' and a.compile else ''})")
    print(f"static/eager: {rate['hf-static'] / rate['hf-eager']:.2f}x; same tokens: {torch.equal(out['hf-eager'].input_ids, out['hf-static'].input_ids)}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

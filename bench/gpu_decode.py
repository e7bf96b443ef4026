"""Decode time of the executor's own generation loop, measured here, next to the cost model.

    .venv/bin/python bench/gpu_decode.py -c hgx-h200 --model qwen2.5-1.5b --batch 1 8 -o out/decode.yaml

On-policy generation is most of a GKD step under an eager runtime (README), and the decode host
time per layer is fitted on one published eager figure: this measures it on the machine at hand.
For each batch size it times `planner.executor.generate.generate` (random weights from the bundled
config, bf16 on a GPU, fp32 on a CPU) for a short and a long completion; the difference over the
extra tokens is the decode step. The prediction is `generation.decode_step` of the compiled cost
model on the given topology under the `kd-planner` runtime. Rows are written in the format of
bench/references/published.yaml with `split: measured-here`, ready to be added to it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(model_name: str, batch: int, prompt: int, short: int, long: int, repeats: int) -> tuple[float, str, str]:
    """(seconds per decode step, device name, dtype) of the executor's generate loop."""
    import torch

    from planner.executor import build
    from planner.executor.data import Batch
    from planner.executor.generate import generate
    from planner.inputs.load import load_model

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = "bf16" if cuda else "fp32"
    model = build.build_model(model_name, load_model(model_name), dtype, 0).to(device).eval()

    def run(new: int) -> float:
        ids = torch.randint(0, 100, (batch, prompt + new), device=device)
        b = Batch(ids, torch.ones_like(ids), ids)
        best = float("inf")
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            generate(model, b, prompt, 1.0, 0)
            if cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    run(short)  # warm-up
    step = (run(long) - run(short)) / (long - short)
    name = torch.cuda.get_device_name(0) if cuda else f"{platform.machine()} CPU ({torch.get_num_threads()} threads)"
    return step, name, dtype


def predict(model_name: str, topology: str, batch: int, prompt: int, new: int, dtype: str) -> float:
    from references_eval import _figures

    from planner.inputs.load import Job, load_cluster, load_model, load_runtime
    from planner.inputs.workload import Workload
    from planner.strategy import Strategy

    shape = load_model(model_name)
    work = Workload(global_batch=batch, micro_batch_min=batch, micro_batch_max=batch, prompt_len=prompt,
                    completion_len=new, lmbda=1, student_dtype=dtype)
    job = Job(name="decode", teacher=shape, student=shape, workload=work)
    f = _figures(job, load_cluster(topology, 1), Strategy("replicate", "ddp", "colocated", 1, 1, b=batch), load_runtime("kd-planner"))
    return f["generation.decode_step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--cluster", default="hgx-h200", help="Topology the prediction uses (bundled name or YAML).")
    ap.add_argument("--model", default="qwen2.5-1.5b", help="Bundled model whose shape is built with random weights.")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--tokens", type=int, nargs=2, default=[8, 72], metavar=("SHORT", "LONG"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-o", "--output", help="Write the rows as YAML here (else stdout).")
    args = ap.parse_args()
    rows = []
    for b in args.batch:
        step, device, dtype = measure(args.model, b, args.prompt, *args.tokens, args.repeats)
        pred = predict(args.model, args.cluster, b, args.prompt, args.tokens[1], dtype)
        print(f"{args.model} batch {b} on {device}: measured {step * 1e3:.2f} ms/token, predicted {pred * 1e3:.2f} "
              f"({(pred - step) / step:+.0%}) on {args.cluster}", file=sys.stderr)
        rows.append({
            "id": f"here-{args.model}-{device.split()[0].lower()}-bs{b}-executor-decode", "kind": "decode_ms_per_token",
            "split": "measured-here", "source": {"repo": "kd-planner", "path": "bench/gpu_decode.py", "revision": "this checkout"},
            "hardware": {"gpu": device, "nodes": 1, "gpus_per_node": 1}, "topology_hint": args.cluster,
            "workload": {"model": args.model, "engine": "hf-eager", "batch": b, "prompt_len": args.prompt,
                         "new_tokens": args.tokens[1], "tp": 1, "dtype": dtype},
            "value": round(step * 1e3, 4), "unit": "ms/token", "predicted": round(pred * 1e3, 4),
            "quote": f"(t({args.tokens[1]} tokens) - t({args.tokens[0]} tokens)) / {args.tokens[1] - args.tokens[0]}, best of {args.repeats}",
        })
    text = yaml.safe_dump(rows, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()

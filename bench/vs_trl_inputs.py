"""What both sides of bench/vs_trl.py read: the model pairs, checkpoints, tokenizer, chat data,
jobs and the budget topology, all written into one work folder.

Each size is a teacher/student pair of random Llamas (vocabulary 512, the byte-level tokenizer's
bytes plus specials) with the prompt and completion lengths it is run at:
  tiny: models/tiny-{teacher,student}.json (6.2M / 0.9M parameters), 32 + 32 tokens
  27m:  a 9-layer 512-wide teacher (27.1M) and a 5-layer 256-wide student (4.0M), 64 + 64 tokens,
        the pair and lengths of the independent harness of issue 17
  27m-32k: the 27m pair with Llama 2's 32,000-token vocabulary (59.3M / 20.1M parameters; the byte
        tokenizer uses the first 259 ids), 64 + 64 tokens: where the LM head and the loss weigh as
        they do at a real vocabulary
  171m-32k: a 9-layer 1024-wide teacher (171M) and the 27m-32k student (20.1M) at the 32,000-token
        vocabulary, 64 + 64 tokens: a teacher large enough that sharding it saves what DeepSpeed
        ZeRO-3 adds on a CPU, for the enforced budget
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'assistant: ' + m['content'] + eos_token }}"
            "{% else %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
PROMPT_OVERHEAD = len("user: \nassistant: ")  # template bytes around the user's text

WIDE = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 9, "num_attention_heads": 8, "num_key_value_heads": 4}
WIDER = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 9, "num_attention_heads": 16, "num_key_value_heads": 8}
NARROW = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 5, "num_attention_heads": 4, "num_key_value_heads": 2}
SIZES = {
    "tiny": {"teacher": {}, "student": {}, "prompt_len": 32, "completion_len": 32},
    "27m": {"teacher": WIDE, "student": NARROW, "prompt_len": 64, "completion_len": 64},
    "27m-32k": {"teacher": WIDE | {"vocab_size": 32000}, "student": NARROW | {"vocab_size": 32000}, "prompt_len": 64, "completion_len": 64},
    "171m-32k": {"teacher": WIDER | {"vocab_size": 32000}, "student": NARROW | {"vocab_size": 32000}, "prompt_len": 64, "completion_len": 64},
}
GLOBAL_BATCH = 8  # 4 samples per rank on 2 ranks


def build_tokenizer(out: Path) -> None:
    """Bytes as tokens, laid out like the executor's fallback (pad 0, bos 1, eos 2, byte b -> b + 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # GPT-2's byte -> printable character map, the alphabet of the ByteLevel pre-tokenizer
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    moved = [b for b in range(256) if b not in keep]
    chars = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(moved)}
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {chars[b]: b + 3 for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(out)


def save_models(work: Path, size: str, seed: int) -> dict:
    """The size's teacher and student with the executor's seeded random weights, saved as checkpoints
    (both sides load these folders): {role: folder, role_params: parameter count}."""
    from planner.executor.build import build_model
    from planner.inputs.load import load_model

    out = {}
    for role, s in (("teacher", seed), ("student", seed + 1)):
        config = json.loads((ROOT / "models" / f"tiny-{role}.json").read_text()) | SIZES[size][role]
        cfg = work / f"{size}-{role}.config" / "config.json"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(json.dumps(config, indent=1))
        model = build_model(str(cfg), load_model(str(cfg)), "fp32", s)
        # as a Hugging Face checkpoint has it (build_model turns the cache off for training): saved off,
        # TRL's DistillationTrainer generated without a KV cache, every step over the whole sequence
        model.config.use_cache = model.generation_config.use_cache = True
        model.save_pretrained(work / f"{size}-{role}")
        out[role], out[f"{role}_params"] = work / f"{size}-{role}", sum(p.numel() for p in model.parameters())
        out["vocab"] = config["vocab_size"]
    return out


def write_data(path: Path, n: int, prompt_len: int, completion_len: int, seed: int) -> None:
    """n chats whose prompt renders to exactly prompt_len tokens and whose answer (+ eos) to completion_len."""
    rng = random.Random(seed)
    text = lambda k: "".join(rng.choice(string.ascii_letters + " .,") for _ in range(k))  # noqa: E731
    with path.open("w") as f:
        for _ in range(n):
            msgs = [{"role": "user", "content": text(prompt_len - PROMPT_OVERHEAD)},
                    {"role": "assistant", "content": text(completion_len - 1)}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def check_tokenization(tok_dir: Path, data: Path, prompt_len: int, completion_len: int) -> None:
    from planner.executor.build import build_tokenizer as load_tok
    from planner.executor.data import read_jsonl

    tok = load_tok(str(tok_dir))
    for p, c in read_jsonl(data, tok)[:4]:  # the template ends the answer with EOS; a plain answer gets one added
        assert (len(p), len(c) + (c[-1:] != [tok.eos_token_id])) == (prompt_len, completion_len), (len(p), len(c))


def write_job(path: Path, size: str, teacher: Path, student: Path, lmbda: float) -> None:
    """The job `planner recommend` plans; the teacher's full logits (not top-k or a cache the planner
    could pick), so both sides compute the same loss."""
    s = SIZES[size]
    path.write_text(f"""name: vs-trl-{size}
teacher: {teacher}
student: {student}
workload:
  global_batch: {GLOBAL_BATCH}
  micro_batch_max: 4
  prompt_len: {s['prompt_len']}
  completion_len: {s['completion_len']}
  lmbda: {lmbda}
  beta: 0.5
  temperature: 1.0
  student_dtype: fp32
  teacher_dtype: fp32
  grad_dtype: fp32
  flash_attention: true
  teacher_output: logits
""")


def write_budget_topology(path: Path, budget_mib: float, overhead_mib: float) -> None:
    """cpu-local whose device memory is the enforced per-process budget (resident bytes above the
    shared baseline of bench/budget.py), of which `overhead_mib` is reserved for what the cost model
    does not count (allocator caching, gloo buffers, checkpoint loading): what `planner recommend`
    plans against."""
    text = (ROOT / "topologies" / "cpu-local.yaml").read_text()
    out = []
    for line in text.splitlines():
        if line.startswith("name: "):
            line = "name: cpu-budget"
        elif line.startswith("description: "):
            line = f"description: cpu-local with an enforced budget of {budget_mib:g} MiB per process above the shared baseline"
        elif line.startswith("  mem_gib: "):
            line = f"  mem_gib: {budget_mib / 1024:.6f}"
        elif line.startswith("  reserved_mem_gib: "):
            line = f"  reserved_mem_gib: {overhead_mib / 1024:.6f}"
        out.append(line)
    path.write_text("\n".join(out) + "\n")

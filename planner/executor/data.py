"""Fixed-shape micro-batches: a local JSONL file (TRL chat `messages`, or `prompt`/`completion`)
or synthetic seeded token prompts.

Every sample is `prompt_len + completion_len` tokens: the prompt left-padded (or cut to its last
tokens), the completion right-padded (or cut). `labels` hold the completion tokens and -100 on the
prompt and the padding, as TRL's GKD collator does. Sample `i` depends only on (seed, i), so any
rank can build any micro-batch and a resumed run sees the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from planner.files import read_text
from planner.inputs.errors import InputError

IGNORE = -100
MAX_DATASET_BYTES = 1 << 30  # the whole dataset is tokenized in memory on every student rank


@dataclass
class Batch:
    input_ids: torch.Tensor  # [b, P + C] int64
    attention_mask: torch.Tensor  # [b, P + C] int64, 0 on padding
    labels: torch.Tensor  # [b, C] completion tokens, IGNORE on padding
    index: list[int] | None = None  # the run's sample indices (a cached teacher looks them up)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.index)


def read_jsonl(path: str | Path, tokenizer, vocab: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per line of a JSONL file; a line that cannot be used is one
    `InputError` naming the file and the line (wrong type, bad messages, token ids outside `vocab`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: dataset not found; give a local JSONL file with `messages` or `prompt`/`completion` per line")
    rows = []
    for n, line in enumerate(read_text(path, MAX_DATASET_BYTES).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not JSON ({e.msg})") from None
        except RecursionError:
            raise InputError(f"{where}: not JSON (nesting too deep)") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with `messages` or `prompt` and `completion`, got {_kind(row)}")
        if "messages" in row:
            msgs = row["messages"]
            if not isinstance(msgs, list) or not msgs or not all(_is_message(m) for m in msgs):
                raise InputError(f"{where}: messages: expected a list of {{\"role\": ..., \"content\": ...}} objects with text values")
            if msgs[-1]["role"] != "assistant":
                raise InputError(f"{where}: messages: the last message must be the assistant's completion")
            try:
                prompt, completion = _render(msgs[:-1], tokenizer), msgs[-1]["content"]
            except Exception as e:  # noqa: BLE001 - a chat template that fails on this line
                raise InputError(f"{where}: messages: the chat template failed ({_first_line(e)})") from None
        elif "prompt" in row and "completion" in row:
            prompt, completion = row["prompt"], row["completion"]
        else:
            raise InputError(f"{where}: expected `messages` or `prompt` and `completion`")
        # a chat template writes its own BOS; any other prompt gets the tokenizer's; a completion none
        rows.append((_ids(prompt, tokenizer, where, "prompt", vocab, special="messages" not in row or not _templated(tokenizer)),
                     _ids(completion, tokenizer, where, "completion", vocab, special=False)))
    if not rows:
        raise InputError(f"{path}: no samples")
    return rows


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(value), "a number")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _is_message(m) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def _templated(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render(msgs: list[dict], tokenizer) -> str:
    if _templated(tokenizer):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant: "


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    """`tokenizer.encode`, with or without its special tokens (BOS) where it has them (not the byte tokenizer)."""
    return tokenizer.encode(text, add_special_tokens=special) if hasattr(tokenizer, "add_special_tokens") else tokenizer.encode(text)


def _ids(value, tokenizer, where: str, what: str, vocab: int | None, special: bool = True) -> list[int]:
    """Token ids of text, of a list of ids (pre-tokenized) or of a list of messages."""
    if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        ids = value
    elif isinstance(value, str) or (isinstance(value, list) and all(_is_message(m) for m in value)):
        try:
            # messages are rendered with the chat template, which writes its own BOS: not a second one
            text = value if isinstance(value, str) else _render(value, tokenizer)
            ids = _encode(tokenizer, text, special and (isinstance(value, str) or not _templated(tokenizer)))
        except Exception as e:  # noqa: BLE001 - a tokenizer or chat template that fails on this line
            raise InputError(f"{where}: {what}: the tokenizer failed on this line ({_first_line(e)})") from None
        ids = ids if isinstance(ids, list) else list(ids)
    else:
        raise InputError(f"{where}: {what}: expected text, a list of token ids or a list of messages, got {_kind(value)}")
    if vocab is not None:
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InputError(f"{where}: {what}: token id {bad} is outside the models' vocabulary (0 to {vocab - 1})")
    return ids


class Samples:
    """Sample `i` of the run, padded to (prompt_len, completion_len)."""

    def __init__(self, prompt_len: int, completion_len: int, vocab: int, seed: int, tokenizer, rows=None):
        self.P, self.C, self.vocab, self.seed, self.rows = prompt_len, completion_len, vocab, seed, rows
        self.pad, self.eos = tokenizer.pad_token_id, tokenizer.eos_token_id
        self._order: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, its permutation of the rows)

    def key(self, i: int) -> int:
        """What sample `i` is: its synthetic index, or the dataset row it draws (epoch by epoch, each
        epoch a seeded permutation of the rows)."""
        if self.rows is None:
            return i
        epoch, k = divmod(i, len(self.rows))
        if self._order[0] != epoch:  # one permutation per epoch, kept: not one per sample
            self._order = (epoch, torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(self.seed + epoch)))
        return self._order[1][k].item()

    def item(self, key: int) -> tuple[list[int], list[int]]:
        if self.rows is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + key)
            ids = torch.randint(3, self.vocab, (self.P + self.C,), generator=g).tolist()
            return ids[: self.P], ids[self.P:]
        prompt, completion = self.rows[key]
        return prompt, completion + [self.eos]

    def sample(self, i: int) -> tuple[list[int], list[int]]:
        return self.item(self.key(i))

    def batch(self, indices: list[int]) -> Batch:
        out = self.pack([self.key(i) for i in indices])
        out.index = list(indices)
        return out

    def pack(self, keys: list[int]) -> Batch:
        """The padded micro-batch of these samples (keys as `key` gives them)."""
        ids, mask, labels = [], [], []
        for key in keys:
            p, c = self.item(key)
            p, c = p[-self.P:], c[: self.C]
            lp, lc = self.P - len(p), self.C - len(c)
            ids.append([self.pad] * lp + p + c + [self.pad] * lc)
            mask.append([0] * lp + [1] * (len(p) + len(c)) + [0] * lc)
            labels.append(c + [IGNORE] * lc)
        return Batch(torch.tensor(ids), torch.tensor(mask), torch.tensor(labels))


def micro_batch_indices(step: int, micro: int, dp_rank: int, dp_size: int, micro_batch: int, grad_accum: int) -> list[int]:
    """The samples one student rank trains on at one micro-step: a global batch per optimizer step."""
    start = step * micro_batch * grad_accum * dp_size + (micro * dp_size + dp_rank) * micro_batch
    return list(range(start, start + micro_batch))


def split_rows(rows: list, fraction: float) -> tuple[list, list]:
    """(train, eval): `fraction` of the rows (at least one) held out for evaluation, chosen by a
    fixed seed so that runs with other seeds evaluate on the same rows."""
    n_eval = max(1, round(len(rows) * fraction))
    if n_eval >= len(rows):
        raise InputError(f"training.eval_fraction: {fraction} of {len(rows)} rows leaves none to train on")
    held = set(torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def load_samples(plan, tokenizer, seed: int, dataset: str | None) -> tuple[Samples, Samples | None]:
    """The training samples and, when `plan.training` asks for one, the eval split's (else None)."""
    w, tr = plan.workload, plan.training
    vocab = min(plan.teacher.shape.vocab, plan.student.shape.vocab)
    if getattr(tokenizer, "vocab_size", 0) > vocab:
        raise InputError(f"{plan.tokenizer or 'the byte-level tokenizer'}: the tokenizer's {tokenizer.vocab_size} tokens do not fit the models' vocabulary of {vocab}")
    rows = read_jsonl(dataset, tokenizer, vocab) if dataset else None
    held = None
    if tr.eval_fraction:
        if rows is None:
            raise InputError("training.eval_fraction: needs a dataset (the plan's `dataset` or --dataset); "
                             "synthetic prompts have no rows to hold out; or set training.eval_dataset")
        rows, held = split_rows(rows, tr.eval_fraction)
    elif tr.eval_dataset:
        held = read_jsonl(tr.eval_dataset, tokenizer, vocab)
    make = lambda r: Samples(w.prompt_len, w.completion_len, vocab, seed, tokenizer, r)  # noqa: E731
    return make(rows), (make(held) if held is not None else None)


def make_samples(plan, tokenizer, seed: int, dataset: str | None) -> Samples:
    return load_samples(plan, tokenizer, seed, dataset)[0]

"""Micro-batches padded to their longest sample: rows of a local dataset (`planner.executor.dataset`)
or synthetic seeded token prompts.

A micro-batch is `[prompt | completion]`: each prompt left-padded (or cut to its last `prompt_len`
tokens) to the batch's longest, each completion right-padded (or cut to `completion_len`) to the
batch's longest, the whole rounded up to a multiple of `training.pad_to_multiple_of` (8 by default,
as TRL's collators pad; 64 for some kernels) by more prompt padding, then completion padding, never
past `prompt_len + completion_len`: those are the maxima the cost model charges. `labels` hold the
completion tokens and -100 on the prompt and the padding, as TRL's GKD collator does. Sample `i`
depends only on (seed, i), so any rank can build any micro-batch and a resumed run sees the same data.

Where ranks exchange tensors whose shapes must agree, the batch is padded again (`Batch.pad`): a
pipelined teacher and the teacher cache run at the fixed `prompt_len + completion_len`, on-policy
generation writes `completion_len` tokens; a disaggregated teacher is told each batch's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from planner.executor.dataset import read_rows
from planner.inputs.errors import InputError

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # [b, P_b + C_b] int64
    attention_mask: torch.Tensor  # [b, P_b + C_b] int64, 0 on padding
    labels: torch.Tensor  # [b, C_b] completion tokens, IGNORE on padding
    index: list[int] | None = None  # the run's sample indices (a cached teacher looks them up)

    @property
    def completion_len(self) -> int:
        return self.labels.shape[1]

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1] - self.labels.shape[1]

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.index)

    def pad(self, prompt_len: int, completion_len: int, pad_id: int = 0) -> "Batch":
        """The same samples, prompts left-padded to `prompt_len` and completions right-padded to
        `completion_len` (padding is masked out: its token id does not matter)."""
        left, right = prompt_len - self.prompt_len, completion_len - self.completion_len
        if left < 0 or right < 0:
            raise ValueError(f"cannot pad a ({self.prompt_len}, {self.completion_len}) batch to ({prompt_len}, {completion_len})")
        if not left and not right:
            return self
        pad = torch.nn.functional.pad
        return Batch(pad(self.input_ids, (left, right), value=pad_id), pad(self.attention_mask, (left, right), value=0),
                     pad(self.labels, (0, right), value=IGNORE), self.index)


def read_jsonl(path, tokenizer, vocab: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per row of a local dataset (kept name; any format `read_rows` reads)."""
    return read_rows(path, tokenizer, vocab)


def padded_lengths(prompts: list[int], completions: list[int], prompt_len: int, completion_len: int, multiple: int) -> tuple[int, int]:
    """(prompt, completion) widths of a micro-batch: its longest of each (at most the maxima), the
    sum rounded up to `multiple` by widening the prompt, then the completion, up to the maxima."""
    p, c = min(max(*prompts, 1), prompt_len), min(max(completions), completion_len)
    extra = -(p + c) % multiple
    grow = min(extra, prompt_len - p)
    return p + grow, c + min(extra - grow, completion_len - c)


class Samples:
    """Sample `i` of the run; micro-batches padded to their longest sample (`padded_lengths`)."""

    def __init__(self, prompt_len: int, completion_len: int, vocab: int, seed: int, tokenizer, rows=None, multiple: int = 8):
        self.P, self.C, self.vocab, self.seed, self.rows, self.multiple = prompt_len, completion_len, vocab, seed, rows, multiple
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
        prompt, completion = self.rows[key]  # ends with EOS: its own (a chat template's), else one added
        return prompt, completion if completion[-1:] == [self.eos] else completion + [self.eos]

    def sample(self, i: int) -> tuple[list[int], list[int]]:
        return self.item(self.key(i))

    def batch(self, indices: list[int]) -> Batch:
        out = self.pack([self.key(i) for i in indices])
        out.index = list(indices)
        return out

    def pack(self, keys: list[int]) -> Batch:
        """The padded micro-batch of these samples (keys as `key` gives them)."""
        items = [self.item(key) for key in keys]
        items = [(p[-self.P:] if self.P else [], c[: self.C]) for p, c in items]
        P, C = padded_lengths([len(p) for p, _ in items], [len(c) for _, c in items], self.P, self.C, self.multiple)
        ids, mask, labels = [], [], []
        for p, c in items:
            lp, lc = P - len(p), C - len(c)
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


def check_vocabulary(plan, tokenizer, vocab: int) -> None:
    """A tokenizer with more tokens (added ones included) than the models' vocabulary is one line
    naming its folder and the plan field it came from."""
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else tokenizer.vocab_size
    if size <= vocab:
        return
    where = getattr(tokenizer, "name_or_path", None) or "the byte-level tokenizer"
    field = "tokenizer" if plan.tokenizer else ("student.ref (its tokenizer files)" if hasattr(tokenizer, "name_or_path") else "tokenizer (none given)")
    raise InputError(f"{where}: {field}: the tokenizer's {size} tokens exceed the models' vocabulary of {vocab} "
                     f"(teacher {plan.teacher.shape.vocab}, student {plan.student.shape.vocab}); use the models' own tokenizer")


def load_samples(plan, tokenizer, seed: int, dataset: str | None) -> tuple[Samples, Samples | None]:
    """The training samples and, when `plan.training` asks for one, the eval split's (else None)."""
    w, tr = plan.workload, plan.training
    vocab = min(plan.teacher.shape.vocab, plan.student.shape.vocab)
    check_vocabulary(plan, tokenizer, vocab)
    rows = read_jsonl(dataset, tokenizer, vocab) if dataset else None
    held = None
    if tr.eval_fraction:
        if rows is None:
            raise InputError("training.eval_fraction: needs a dataset (the plan's `dataset` or --dataset); "
                             "synthetic prompts have no rows to hold out; or set training.eval_dataset")
        rows, held = split_rows(rows, tr.eval_fraction)
    elif tr.eval_dataset:
        held = read_jsonl(tr.eval_dataset, tokenizer, vocab)
    make = lambda r: Samples(w.prompt_len, w.completion_len, vocab, seed, tokenizer, r, tr.pad_to_multiple_of)  # noqa: E731
    return make(rows), (make(held) if held is not None else None)


def make_samples(plan, tokenizer, seed: int, dataset: str | None) -> Samples:
    return load_samples(plan, tokenizer, seed, dataset)[0]

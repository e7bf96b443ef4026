"""Data: JSONL rows (chat `messages` or `prompt`/`completion`) and synthetic prompts become
fixed-shape micro-batches with labels on the completion only; bad rows are one-line errors."""

import json

import pytest

from planner.executor.build import ByteTokenizer
from planner.executor.data import IGNORE, Samples, micro_batch_indices, read_jsonl
from planner.inputs.errors import InputError


def test_jsonl_and_padding(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n"
                 + json.dumps({"prompt": "a long prompt here", "completion": "ok"}) + "\n")
    tok = ByteTokenizer()
    rows = read_jsonl(f, tok)
    s = Samples(8, 6, 512, 0, tok, rows)
    b = s.batch([0, 1])
    assert b.input_ids.shape == (2, 14) and b.labels.shape == (2, 6)
    for i in range(2):
        c = b.labels[i][b.labels[i] != IGNORE].tolist()
        assert c[-1] == tok.eos_token_id and tok.decode(c) in ("yo", "ok")
        assert b.attention_mask[i, 8 + len(c):].sum() == 0  # right padding after the completion


def test_synthetic_is_seeded_and_splits_the_global_batch():
    tok = ByteTokenizer()
    a, b = Samples(4, 4, 512, 3, tok).batch([5]), Samples(4, 4, 512, 3, tok).batch([5])
    assert a.input_ids.equal(b.input_ids) and (a.labels != IGNORE).all()
    seen = [i for m in range(2) for r in range(2) for i in micro_batch_indices(1, m, r, 2, 2, 2)]
    assert sorted(seen) == list(range(8, 16))


def test_bad_rows(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "no"}\n')
    with pytest.raises(InputError, match="bad.jsonl:1: expected"):
        read_jsonl(f, ByteTokenizer())

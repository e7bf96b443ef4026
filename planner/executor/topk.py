"""`teacher_output: topk`: the teacher hands the loss its k largest logits per token and their indices.

- colocated (replicate, shard, pipeline): `TopKTeacher` wraps the strategy's teacher and takes the
  top-k of the [b, C, V] logits it computed on this rank (`torch.topk`, no loop over tokens); the
  loss then reads [b, C, k] instead of [b, C, V];
- tensor parallel (`tp:N`): the teacher selects its top-k shard by shard (`TensorParallel.request_topk`),
  so the full logits never cross the TP group;
- disaggregated: the teacher rank runs the same wrapper inside `teacher.serve` and sends values
  (in `logits_dtype`) and int32 indices, [b, C, k] each, instead of the logits; the student rank's
  `teacher.Remote(topk=k)` receives them.

The loss is the renormalised top-k generalized JSD of `planner.executor.loss` (`TopK` input).
"""

from __future__ import annotations

from planner.executor.data import Batch
from planner.executor.loss import TopK, top_k


class TopKTeacher:
    """A teacher of any strategy whose answer is the top-k of its logits."""

    def __init__(self, inner, k: int):
        self.inner, self.k = inner, k

    def request(self, batch: Batch):
        if hasattr(self.inner, "request_topk"):  # a tp teacher selects on its vocabulary shards
            return self.inner.request_topk(batch, self.k)
        wait = self.inner.request(batch)

        def topk() -> TopK:
            return top_k(wait(), self.k)
        return topk

    def __getattr__(self, name: str):  # model / stage_module for the memory report
        return getattr(self.inner, name)

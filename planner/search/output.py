"""The teacher output as a choice the search makes per plan (issue 17): full logits, top-k, or top-k
from an offline cache.

A job fixes one (`workload.teacher_output: logits | topk | cached`) or leaves it to the planner
(`auto`, the default); the runtime says which it can train from (`Runtime.teacher_outputs`). The
search costs every allowed output for every layout and writes the winner's into the plan's
workload, which is what the executor reads. Top-k changes the loss (an approximation of the
full-vocabulary divergence, renormalised over the teacher's k tokens: docs/cost-model.md), so among
plans that tie on speed the exact loss comes first.

Spelling: a strategy as `recommend` prints it (a rollout engine other than hf-eager appended as
`+vllm`), with `+topk` or `+cached` appended when the teacher output is not full logits
(`shard:16/zero3/colocated/4+vllm+topk`); `estimate --strategy` and
`inflection --between` read it back.
"""

from __future__ import annotations

from planner.inputs.errors import InputError
from planner.inputs.load import Job
from planner.inputs.runtime import GATHERS
from planner.strategy import ROLLOUT_ENGINES

OUTPUTS = ("logits", "topk", "cached")
# Among plans that tie on speed: the exact loss first, then live top-k, then a cache (one more
# moving part: the one-time pass and its files).
OUTPUT_ORDER = {name: i for i, name in enumerate(OUTPUTS)}
WORDS = {"logits": "full logits", "topk": "the teacher's top-k", "cached": "the teacher's top-k from an offline cache"}


def with_output(job: Job, output: str) -> Job:
    """The job with its teacher output fixed to `output` (one of the job's `workload.outputs`)."""
    if output == job.workload.teacher_output:
        return job
    return job.model_copy(update={"workload": job.workload.model_copy(update={"teacher_output": output})})


def of(job: Job) -> str:
    """The output a job runs when nothing chose one: its own, or full logits under auto."""
    return "logits" if job.workload.teacher_output == "auto" else job.workload.teacher_output


def rejection(output: str, disaggregated: bool) -> str | None:
    """Why a layout cannot use this teacher output, or None."""
    if output == "cached" and disaggregated:
        return "an offline teacher cache needs no teacher GPUs of its own (colocated only)"
    return None


def suffix(output: str) -> str:
    """`+topk`, `+cached`, or nothing for full logits."""
    return "" if output == "logits" else f"+{output}"


def split(text: str, flag: str) -> tuple[str, str | None]:
    """`STRATEGY[+OUTPUT]` -> (STRATEGY, OUTPUT or None); the output follows the strategy's last part
    (a '+' inside it, `shard:16+ep:8` or `zero3+per_step`, belongs to the strategy)."""
    strategy, plus, output = text.rpartition("+")
    if plus and output in OUTPUTS:
        return strategy, output
    if plus and "/" not in output and output not in GATHERS and output.partition(":")[0] not in ROLLOUT_ENGINES:
        raise InputError(f"{flag}: '{text}': the teacher output after '+' must be one of {', '.join(OUTPUTS)}")
    return text, None


def choose(job: Job, output: str | None, flag: str) -> Job:
    """The job with the output a command line asked for (`split`), checked against its lmbda."""
    if output is None:
        return job
    if output == "cached" and job.workload.lmbda > 0:
        raise InputError(f"{flag}: +cached needs fixed completions (workload.lmbda 0); this job has lmbda {job.workload.lmbda}")
    return with_output(job, output)


def note(output: str, k: int) -> str | None:
    """What a user must know when a plan trains from top-k: the loss is an approximation."""
    if output == "logits":
        return None
    where = "read from an offline cache (written once by a teacher pass)" if output == "cached" else "sent by the teacher"
    return (f"it trains on the teacher's top-{k} log-probabilities {where}, renormalised over those {k} tokens: an "
            "approximation of the full-vocabulary loss; set `teacher_output: logits` in the job for the exact loss")

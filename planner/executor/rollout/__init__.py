"""The rollout role: what generates the student's on-policy completions (`plan.rollout.engine`).

- hf-eager: `planner.executor.generate`, a Python decode loop over the trainer's model;
- hf-static: `planner.executor.rollout.static`, a static KV cache and a compiled decode step;
- vllm: `planner.executor.rollout.vllm_engine`, a vLLM engine colocated in the trainer process,
  its weights refreshed in place after every optimizer step (`placement: colocated`);
  `planner.executor.rollout.vllm_server`, vLLM servers of the student on GPUs of their own
  (`placement: dedicated`), refreshed from a file through `vllm_reload`, their worker extension.
"""

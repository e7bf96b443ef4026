"""The served roles of a plan: vLLM OpenAI servers started before the trainer, and the shell lines
that start them, wait for their health and stop them when the script exits.

A served teacher (`teacher.engine: vllm-server`) and dedicated rollout (`rollout.placement:
dedicated`) run on cluster GPUs outside the trainer's torch.distributed world; those GPUs follow
the trainer's ranks (`Plan.torch_ranks` is 0..n-1). Rank r is GPU r % gpus_per_node of node
r // gpus_per_node. Each replica of tp GPUs is one `python -m vllm.entrypoints.openai.api_server`;
the trainer gets one `--teacher-url` (or `--rollout-url`) per replica. A rollout server also gets
`VLLM_SERVER_DEV_MODE=1` and the planner's worker extension, through which the trainer reloads the
student's weights into it after every optimizer step (planner/executor/rollout/vllm_server.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.executor.rollout.vllm_reload import EXTENSION  # the rollout server's weight reload
from planner.inputs.errors import InputError
from planner.launch.options import LaunchOptions, q, slug
from planner.plan import Plan, tokenizer_folder

MODULE = "vllm.entrypoints.openai.api_server"
VLLM_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # fp8/int8 weights: vLLM reads the checkpoint's own (auto)


@dataclass(frozen=True)
class Server:
    """One replica of a served role."""

    role: str                 # "teacher" or "rollout"
    index: int                # replica number within its role
    node: int                 # node of the allocation (0 = the first)
    gpus: tuple[int, ...]     # the node's GPUs it runs on
    port: int                 # where it listens on its node

    @property
    def flag(self) -> str:
        return f"--{self.role}-url"

    def log(self, job: str) -> str:
        return f"{slug(job)}-{self.role}-{self.index}"


def replicas(ranks: list[int], tp: int, gpus_per_node: int) -> list[tuple[int, tuple[int, ...]]]:
    """(node, node-local GPUs) of each group of tp consecutive ranks; a group may not span nodes
    (vLLM's tensor parallelism runs inside one node here)."""
    out = []
    for i in range(0, len(ranks), tp):
        group = sorted(ranks[i:i + tp])
        nodes = {r // gpus_per_node for r in group}
        if len(nodes) != 1:
            raise InputError(f"ranks {group}: a served replica of tp {tp} spans nodes {sorted(nodes)}; "
                             "give each replica GPUs of one node")
        out.append((nodes.pop(), tuple(r % gpus_per_node for r in group)))
    return out


def servers(plan: Plan, opts: LaunchOptions) -> list[Server]:
    """The plan's server replicas, teacher first; ports from `opts.server_port` up, one per replica."""
    roles = []
    if plan.teacher.served:
        roles.append(("teacher", plan.teacher.ranks, plan.teacher.tp))
    if plan.rollout.placement == "dedicated":
        roles.append(("rollout", plan.rollout.ranks, plan.rollout.tp))
    out: list[Server] = []
    for role, ranks, tp in roles:
        for i, (node, gpus) in enumerate(replicas(ranks, tp, plan.gpus_per_node)):
            out.append(Server(role, i, node, gpus, int(opts.server_port) + len(out)))
    return out


def model_folder(ref: str, field: str) -> str:
    """vLLM loads a checkpoint folder (config.json; `--random-init` gives it `--load-format dummy`,
    still from that config): the absolute path, or one error line."""
    p = Path(ref).expanduser()
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise InputError(f"{field}: {ref!r}: a served model runs in vLLM, which loads a checkpoint folder with a config.json "
                         "(`save_pretrained` writes one); point the ref at one (with --random-init it may hold the config only)")
    return str(p.resolve())


def command(plan: Plan, s: Server, host: str, opts: LaunchOptions) -> list[str]:
    """`[env VAR=...] "$PYTHON" -m vllm.entrypoints.openai.api_server --model ... ` as shell words;
    `host` is a shell word already (a quoted address or "${nodes[k]}")."""
    w = plan.workload
    if s.role == "teacher":
        ref, tp, field = plan.teacher.ref, plan.teacher.tp, "teacher.ref"
        dtype = plan.teacher.shape.dtype
    else:
        ref, tp, field = plan.student.ref, plan.rollout.tp, "student.ref"
        dtype = plan.student.shape.dtype
    folder = model_folder(ref, field)
    env = []
    if plan.backend == "gloo":  # vLLM's CPU build: a small KV cache, no compile (starts in 20-50 s, not ~110)
        env += ['VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"', 'TORCHINDUCTOR_CACHE_DIR="$VLLM_CACHE_ROOT/inductor"']
    else:
        env += ["CUDA_VISIBLE_DEVICES=" + ",".join(map(str, s.gpus))]
    if s.role == "rollout":  # the trainer reloads its weights through /collective_rpc, a dev-mode route
        env.append("VLLM_SERVER_DEV_MODE=1")
    words = (["env", *env] if env else []) + [
        '"$PYTHON"', "-m", MODULE, "--model", q(folder, field), "--host", host, "--port", str(s.port),
        "--tensor-parallel-size", str(tp), "--max-logprobs", str(int(w.topk)),
        # + 1: the scoring request asks for one new token (vLLM refuses max_tokens 0 once a prompt fills the model length)
        "--max-model-len", str(int(w.prompt_len + w.completion_len) + 1), "--dtype", VLLM_DTYPE.get(dtype, "auto")]
    tok = tokenizer_folder(plan)
    if tok is None:  # the executor's byte-level tokenizer: the server takes token ids
        words.append("--skip-tokenizer-init")
    elif Path(tok).expanduser().resolve() != Path(folder):
        words += ["--tokenizer", q(Path(tok).expanduser().resolve(), "tokenizer")]
    if s.role == "rollout":
        words += ["--gpu-memory-utilization", str(plan.rollout.gpu_memory_utilization), "--worker-extension-cls", EXTENSION]
    if opts.random_init:
        words += ["--load-format", "dummy"]
    if plan.backend == "gloo":
        words.append("--enforce-eager")
    return words


def prelude(n: int, timeout_s: int) -> list[str]:
    """The shell functions: `stop_servers` (an EXIT trap: TERM, up to 30 s, then KILL) and
    `wait_healthy URL PID LOG` (GET URL/health every 2 s until 200; one line and exit 1 when the
    server died or `timeout_s` passed)."""
    t = int(timeout_s)
    return [f"# Served roles: {n} vLLM OpenAI server(s), started before the trainer and stopped when this script exits.",
            "export VLLM_CACHE_ROOT=\"${VLLM_CACHE_ROOT:-${TMPDIR:-/tmp}/kd-planner-vllm-$(id -u)}\"",
            "server_pids=()",
            "stop_servers() {",
            '    local p left',
            '    ((${#server_pids[@]})) || return 0',
            '    for p in "${server_pids[@]}"; do kill -s TERM -- "$p" 2>/dev/null || true; done',
            '    for _ in $(seq 30); do',
            '        left=0; for p in "${server_pids[@]}"; do kill -0 -- "$p" 2>/dev/null && left=1; done',
            '        [ "$left" = 0 ] && break; sleep 1',
            '    done',
            '    for p in "${server_pids[@]}"; do kill -s KILL -- "$p" 2>/dev/null || true; done',
            '    echo "kd-planner: stopped the ${#server_pids[@]} server(s)"',
            "}",
            "trap stop_servers EXIT",
            "trap 'exit 143' TERM",
            "trap 'exit 130' INT",
            "wait_healthy() {",
            f'    local url=$1 pid=$2 log=$3 deadline=$((SECONDS + {t}))',
            "    until \"$PYTHON\" -c 'import sys, urllib.request as u; sys.exit(u.urlopen(sys.argv[1], timeout=5).status != 200)' \"$url/health\" 2>/dev/null; do",
            '        if ! kill -0 -- "${pid#-}" 2>/dev/null; then  # the process: its group may not exist yet (setsid not yet called)',
            '            echo "kd-planner: the server for $url exited before /health answered (its log: $log)" >&2; exit 1',
            "        fi",
            f'        if ((SECONDS >= deadline)); then',
            f'            echo "kd-planner: $url/health did not answer 200 within {t} s (its log: $log)" >&2; exit 1',
            "        fi",
            "        sleep 2",
            "    done",
            '    echo "kd-planner: $url is healthy"',
            "}"]


def started(n: int) -> str:
    return f'echo "kd-planner: {n} server(s) healthy; starting the trainer"'


def url_words(ss: list[Server], host_of) -> list[str]:
    """`--teacher-url http://HOST:PORT` (and `--rollout-url`) per replica; `host_of(server)` gives
    the host as text to go inside double quotes."""
    return [w for s in ss for w in (s.flag, f'"http://{host_of(s)}:{s.port}"')]

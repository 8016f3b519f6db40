"""Job specs: strict validation with errors that name the key, and a fingerprint that is stable and sensitive."""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import UserError
from runner.spec import PrecisionSpec, fingerprint, load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent
JOBS = sorted((REPO / "jobs").glob("*.toml"))
BASE = {"name": "t", "model": {"name": "tiny-random-llama"}}


def test_shipped_jobs_are_valid():
    names = {p.stem for p in JOBS}
    assert {"demo-cpu", "smoke", "codellama-34b-instruct"} <= names
    for path in JOBS:
        assert len(load_spec(path).fingerprint) == 16


def test_reference_job_matches_reference_report():
    spec = load_spec(REPO / "jobs" / "codellama-34b-instruct.toml")
    assert (spec.model.dtype, spec.model.tensor_parallel, spec.perf.batch_sizes) == ("float16", 2, [1])
    assert spec.humaneval.problems == "all" and spec.humaneval.temperature == 0
    # the shipped reference documents belong to this job: compare --job finds them
    for device in ("910B3", "A100"):
        doc = json.loads((REPO / "examples" / f"reference-{device}.json").read_text())
        assert doc["job"]["fingerprint"] == spec.fingerprint


@pytest.mark.parametrize("data, message", [
    ({**BASE, "colour": 1}, "unknown key 'colour'"),
    ({**BASE, "perf": {"repeat": 3}}, "unknown key 'perf.repeat'"),
    ({**BASE, "humaneval": {"temprature": 0.2}}, "unknown key 'humaneval.temprature'"),
    ({"name": "t"}, "missing required key 'model'"),
    ({"name": "t", "model": {"dtype": "float16"}}, "missing required key 'model.name'"),
    ({**BASE, "perf": {"repeats": "3"}}, "perf.repeats: expected int, got str"),
    ({**BASE, "perf": {"batch_sizes": 1}}, "perf.batch_sizes: expected a list"),
    ({**BASE, "perf": {"batch_sizes": [1, True]}}, "perf.batch_sizes[1]: expected int, got bool"),
    ({**BASE, "model": {"name": "x", "dtype": "fp8"}}, "model.dtype"),
    ({**BASE, "perf": {"new_tokens": 1}}, "perf.new_tokens"),
    ({**BASE, "humaneval": {"problems": "first:0"}}, "humaneval.problems"),
    ({**BASE, "humaneval": {"k": [10]}}, "humaneval.k"),
    ({**BASE, "humaneval": {"prompt_style": "chat"}}, "humaneval.prompt_style"),
    ({**BASE, "model": "tiny"}, "model: expected a table"),
])
def test_bad_specs_name_the_key(data, message):
    with pytest.raises(UserError) as e:
        parse_spec(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="job file not found"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(UserError, match="invalid TOML"):
        load_spec(bad)


def test_fingerprint_ignores_what_cannot_change_a_result():
    spec = parse_spec(BASE)
    assert fingerprint(parse_spec({**BASE, "name": "other"})) == spec.fingerprint
    assert fingerprint(parse_spec({**BASE, "model": {"name": "tiny-random-llama", "path": "/x"}})) == spec.fingerprint
    # defaults written out explicitly are the same job
    assert fingerprint(parse_spec({**BASE, "perf": {"repeats": 3, "warmup": 1}, "seed": 1234})) == spec.fingerprint
    a = parse_spec({**BASE, "humaneval": {"problems": ["HumanEval/1", "HumanEval/0"]}})
    b = parse_spec({**BASE, "humaneval": {"problems": ["HumanEval/0", "HumanEval/1"]}})
    assert a.fingerprint == b.fingerprint


def test_fingerprint_is_stable_across_releases():
    """Pinned: a change here silently splits every team's history into two jobs. Change only on purpose."""
    spec = load_spec(REPO / "jobs" / "codellama-34b-instruct.toml")
    assert spec.precision == PrecisionSpec()  # the shipped job reads per-layer precision at the default settings
    assert spec.fingerprint == "503d79e90157b72b"
    # the same job without the section keeps the fingerprint it had before the section existed
    assert dataclasses.replace(spec, precision=None).fingerprint == "40fe0632ad0e366a"


# every fingerprinted field, with a different valid value
CHANGES = [("model", "name", "other/model"), ("model", "dtype", "bfloat16"), ("model", "tensor_parallel", 2),
           ("model", "revision", "abc"), ("perf", "batch_sizes", [1, 2]), ("perf", "prompt_tokens", 65),
           ("perf", "new_tokens", 33), ("perf", "warmup", 2), ("perf", "repeats", 4),
           ("humaneval", "problems", "first:3"), ("humaneval", "samples_per_problem", 2),
           ("humaneval", "temperature", 0.2), ("humaneval", "top_p", 0.95), ("humaneval", "max_new_tokens", 100),
           ("humaneval", "prompt_style", "instruct"), ("humaneval", "stop", ["\n"]), ("humaneval", "timeout_s", 5.0),
           ("humaneval", "batch_size", 4), (None, "seed", 7)]


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from(range(len(CHANGES))), min_size=1))
def test_fingerprint_changes_with_every_result_field(indices):
    data = json.loads(json.dumps(BASE))
    for i in indices:
        section, key, value = CHANGES[i]
        (data.setdefault(section, {}) if section else data)[key] = value
    assert fingerprint(parse_spec(data)) != fingerprint(parse_spec(BASE))


def test_spec_round_trips_through_its_dict():
    spec = load_spec(REPO / "jobs" / "demo-cpu.toml")
    again = parse_spec(spec.to_dict())
    assert again == spec and dataclasses.asdict(again) == spec.to_dict()
    tomllib.loads((REPO / "jobs" / "demo-cpu.toml").read_text())

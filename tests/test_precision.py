"""Per-layer precision: the device sketch is the reference count sketch; estimates track the exact errors of the full
tensors (fp32 vs bf16 on the demo model, TP 1 vs TP 3); a perturbed layer is found first; the stored size for
CodeLlama-34b; the [precision] spec; the run document, the store, `runner compare` and `runner precision compare`."""
from __future__ import annotations

import copy
import json
import math
import os
import pickle
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core import precision, rundoc
from core.errors import UserError
from db import store, tables
from db.engine import open_store
from runner import models
from runner.cli import app
from runner.spec import ModelSpec, PrecisionSpec, parse_spec
from tests.precision_support import build_tiny, capture_with_outputs, exact_errors

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
BASE = {"name": "t", "model": {"name": "tiny-random-llama"}}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    smoke = models.resolve(ModelSpec(name=models.SMOKE))
    return build_tiny(tmp_path_factory.mktemp("tiny") / "tiny-6-heads", smoke)


def _load(model_dir: Path, dtype: str = "float32"):
    return models.load(model_dir, "cpu", dtype)


def _check_estimates(result: dict, exact: dict[str, float], floor: float = 1e-4) -> int:
    """Every layer whose exact error is at least `floor` is estimated within 10%; returns how many were checked."""
    checked = 0
    for row in result["layers"]:
        if exact[row["layer"]] >= floor:
            assert row["rel_error"] == pytest.approx(exact[row["layer"]], rel=0.10), row
            checked += 1
    return checked


def test_sketch_and_stats_match_the_reference(tiny_dir):
    model, tok = _load(tiny_dir)
    for size in (4096, 64):  # wider than every layer; narrower than both widths (columns folded first)
        section, outputs = capture_with_outputs(model, tok, PrecisionSpec(prompts="first:2", sketch_size=size))
        assert [layer["name"] for layer in section["layers"]] == ["layers.0", "layers.1", "layers.2", "layers.3",
                                                                  "norm", "logits"]
        assert section["prompts"]["tasks"] == ["HumanEval/0", "HumanEval/1"]
        for layer in section["layers"]:
            x = outputs[layer["name"]]
            width = 258 if layer["name"] == "logits" else 96
            reference = precision.sketch(x.reshape(-1, width), 0, size)
            assert np.allclose(precision.decode(layer["sketch"]), reference, rtol=1e-6, atol=1e-6 * np.abs(x).max())
            assert layer["elements"] == x.size and layer["nan"] == layer["inf"] == 0
            assert layer["mean"] == pytest.approx(x.mean()) and layer["std"] == pytest.approx(x.std())
            assert layer["max_abs"] == pytest.approx(np.abs(x).max()) and layer["l2"] == pytest.approx(np.linalg.norm(x))
    logits = section["logits"]
    assert logits["positions"] == sum(section["prompts"]["tokens"]) and logits["top_k"] == 8


def test_estimate_is_unbiased_and_within_its_spread():
    """Relative errors of random differences, one heavy outlier included: spread near sqrt(1 / (2 size))."""
    rng = np.random.default_rng(0)
    b = rng.standard_normal((300, 500))
    b[0, 7] = 400.0  # an outlier feature, as LLM hidden states have
    ratios = []
    for trial in range(40):
        a = b + 1e-3 * rng.standard_normal(b.shape) * (1 + 50 * (rng.random(b.shape) < 0.001))
        sa, sb = precision.sketch(a, 0, 4096), precision.sketch(b, 0, 4096)
        ratios.append(np.linalg.norm(sa - sb) / np.linalg.norm(a - b))
    assert abs(np.mean(ratios) - 1) < 0.01 and np.std(ratios) < 0.02


def test_perturbed_layer_is_the_first_divergent(tiny_dir):
    import torch

    model, tok = _load(tiny_dir)
    spec = PrecisionSpec(prompts="first:2")
    original = capture_with_outputs(model, tok, spec)[0]
    with torch.no_grad():
        for w in model.model.layers[2].parameters():
            w.mul_(1.01)
    perturbed = capture_with_outputs(model, tok, spec)[0]
    result = precision.compare(perturbed, original, threshold=1e-4)
    errors = {r["layer"]: r["rel_error"] for r in result["layers"]}
    assert errors["layers.0"] == errors["layers.1"] == 0.0  # the same computation, bit for bit
    assert errors["layers.2"] > 1e-3 and result["first_over"] == "layers.2"
    assert "first layer at or over 0.0001: **layers.2**" in tables.precision_text(result, "scaled", "original")
    assert precision.compare(original, original)["first_over"] is None


def test_non_finite_output_is_counted_and_divergent(tiny_dir):
    import torch

    model, tok = _load(tiny_dir)
    spec = PrecisionSpec(prompts="first:1")
    clean = capture_with_outputs(model, tok, spec)[0]

    def poison(_module, _inputs, output):  # one NaN and two Infs in layer 1's output of the first token
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = model.model.layers[1].register_forward_hook(poison)
    try:
        poisoned = capture_with_outputs(model, tok, spec)[0]
    finally:
        handle.remove()
    layer = poisoned["layers"][1]
    assert (layer["nan"], layer["inf"]) == (1, 2) and math.isfinite(layer["l2"]) and math.isfinite(layer["mean"])
    result = precision.compare(poisoned, clean)
    assert result["first_over"] == "layers.1" and result["layers"][1]["rel_error"] is None
    assert "| layers.1 (first over) | non-finite values (3 / 0) |" in tables.precision_text(result, "x", "y")
    json.dumps(result, allow_nan=False)  # strict JSON whatever the outputs held


@pytest.mark.slow
def test_demo_fp32_vs_bf16_estimates_and_first_layer_over():
    model_dir = models.resolve(ModelSpec(name=models.DEMO))
    runs = {dtype: capture_with_outputs(*_load(model_dir, dtype), PrecisionSpec()) for dtype in ("float32", "bfloat16")}
    (fp32, exact32), (bf16, exact16) = runs["float32"], runs["bfloat16"]
    result = precision.compare(bf16, fp32)
    exact = exact_errors(exact16, exact32)
    assert _check_estimates(result, exact) == len(result["layers"]) == 32  # 30 decoder layers, norm, logits
    for row in result["layers"]:  # cosine from the exact norms and the estimated difference
        a, b = exact16[row["layer"]], exact32[row["layer"]]
        cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        assert (1 - row["cosine"]) == pytest.approx(1 - cos, rel=0.25)  # cosine gap, not the cosine itself
    first = next(r["layer"] for r in result["layers"] if r["rel_error"] >= 1e-2)
    assert result["first_over"] == first and exact[first] >= 0.9e-2
    assert f"first layer at or over 0.01: **{first}**" in tables.precision_text(result, "bf16", "fp32")
    logits = result["logits"]
    assert 0.9 < logits["top1_agreement"] < 1 and 0 < logits["kl_mean"] < logits["kl_max"] < 0.1


@pytest.mark.slow
def test_tp3_against_tp1_on_the_demo_model(tmp_path):
    """The demo model (9 attention / 3 KV heads) on rank 0 after the all-reduce: fp32 agrees below 1e-5 in every
    layer; bf16's larger differences are estimated within 10% of the exact ones. One prompt keeps it short."""
    model_dir, prompts, out = models.resolve(ModelSpec(name=models.DEMO)), "first:1", tmp_path / "tp3.pickle"
    subprocess.run([sys.executable, "-m", "runner.tp.launch", "--standalone", "--nproc_per_node=3",
                    str(REPO / "tests" / "precision_support.py"), str(model_dir), str(out), prompts, "float32",
                    "bfloat16"], check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    tp3 = pickle.loads(out.read_bytes())
    for dtype in ("float32", "bfloat16"):
        one, one_outputs = capture_with_outputs(*_load(model_dir, dtype), PrecisionSpec(prompts=prompts))
        three, three_outputs = tp3[dtype]
        result = precision.compare(three, one)
        assert len(result["layers"]) == 32  # 30 decoder layers, norm, logits
        if dtype == "float32":
            assert all(r["rel_error"] < 1e-5 for r in result["layers"]), result["layers"]
            assert result["logits"]["top1_agreement"] == 1.0
        else:
            # every layer differs by at least 1e-4 in bf16 (all reductions in another order), so all are checked
            assert _check_estimates(result, exact_errors(three_outputs, one_outputs)) == len(result["layers"])


def test_stored_size_for_codellama_34b_at_default_settings():
    """48 decoder layers, the final norm and the logits at the default sketch size, and the logits' top_k for every
    position of the default prompts (at most one token per byte plus BOS with Llama's byte-fallback tokenizer)."""
    from runner.humaneval.generation import pick_problems

    spec = PrecisionSpec()
    problems = pick_problems(spec.prompts, "precision.prompts")
    positions = sum(len(p["prompt"].encode()) + 1 for p in problems)
    rng = np.random.default_rng(0)
    layers = [precision.layer_record(name, elements=positions * 8192, total=1.0, total_sq=2.0, max_abs=3.0, nan=0,
                                     inf=0, sketch_values=rng.standard_normal(spec.sketch_size))
              for name in [f"layers.{i}" for i in range(48)] + ["norm", "logits"]]
    logits = precision.logits_record(rng.integers(0, 32000, (positions, spec.top_k)),
                                     -rng.random((positions, spec.top_k)))
    section = precision.section(tasks=[p["task_id"] for p in problems], tokens=[0] * len(problems),
                                size=spec.sketch_size, layers=layers, logits=logits, seconds=1.0)
    size = len(json.dumps(section))
    assert size <= 2_000_000, size


def test_precision_spec():
    plain = parse_spec(BASE)
    assert plain.precision is None  # off unless the job has the section, whose absence keeps old fingerprints
    on = parse_spec({**BASE, "precision": {}})
    assert on.precision == PrecisionSpec() and on.fingerprint != plain.fingerprint
    assert parse_spec({**BASE, "precision": False}).precision is None
    changed = [{"prompts": "first:2"}, {"prompts": ["HumanEval/1", "HumanEval/0"]}, {"layers": ["layers", "logits"]},
               {"sketch_size": 1024}, {"top_k": 4}]
    prints = {parse_spec({**BASE, "precision": c}).fingerprint for c in changed}
    assert len(prints) == len(changed) and on.fingerprint not in prints
    same = parse_spec({**BASE, "precision": {"layers": ["logits", "norm", "layers"]}})
    assert same.fingerprint == on.fingerprint  # the layers are kept in depth order whatever the spec's order
    for bad, key in [({"prompts": "all"}, "precision.prompts"), ({"prompts": []}, "precision.prompts"),
                     ({"layers": ["layer.3"]}, "precision.layers"), ({"layers": []}, "precision.layers"),
                     ({"sketch_size": 0}, "precision.sketch_size"), ({"top_k": 0}, "precision.top_k"),
                     ({"sketch": 4096}, "unknown key 'precision.sketch'")]:
        with pytest.raises(UserError, match=key):
            parse_spec({**BASE, "precision": bad})
    for job in ("demo-cpu", "smoke"):
        assert parse_spec(tomllib.loads((REPO / "jobs" / f"{job}.toml").read_text())).precision


def _other_device(doc: dict, device: str, scale_from: int | None = None) -> dict:
    """A copy of `doc` as another device's run; the layers from `scale_from` on read 5% larger in their sketches."""
    other = copy.deepcopy(doc)
    other["run_id"], other["device"]["class"] = str(uuid.uuid4()), device
    for layer in other["precision"]["layers"][scale_from:] if scale_from is not None else []:
        layer["sketch"] = precision.encode(precision.decode(layer["sketch"]) * 1.05)
    return rundoc.validate(other)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke job's run document, as `runner submit --out` writes it."""
    out = tmp_path_factory.mktemp("smoke") / "smoke.json"
    result = runner.invoke(app, ["submit", "--device", "cpu", "--job", str(REPO / "jobs" / "smoke.toml"),
                                 "--out", str(out)], env={"DEVCOMPARE_DB_URL": f"sqlite:///{out.parent / 'x.db'}"})
    assert result.exit_code == 0, result.output
    return out


def test_run_document_store_and_reports(tmp_path, smoke_run):
    out = smoke_run
    doc = rundoc.read(out)
    assert doc["format"] == rundoc.FORMAT == "devcompare.run/2"
    assert [layer["name"] for layer in doc["precision"]["layers"]] == ["layers.0", "layers.1", "norm", "logits"]
    assert rundoc.read(REPO / "examples" / "reference-A100.json")["format"] == "devcompare.run/1"  # still read

    db = f"sqlite:///{tmp_path / 'store.db'}"
    engine = open_store(db)
    candidate, baseline = _other_device(doc, "910B3", scale_from=1), _other_device(doc, "A100")
    assert store.push(engine, candidate) and store.push(engine, baseline)
    shown = runner.invoke(app, ["compare", "--fingerprint", doc["job"]["fingerprint"], "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "**Per-layer precision**, 910B3 vs A100: first layer at or over 0.01: **layers.1**" in shown.output
    assert "| layers.0 | 0.00e+00 | 1.0000000 |" in shown.output and "| layers.1 (first over) | " in shown.output
    as_json = runner.invoke(app, ["compare", "--fingerprint", doc["job"]["fingerprint"], "--db", db, "-f", "json"])
    assert json.loads(as_json.output)["precision"]["first_over"] == "layers.1"

    # by run id prefix from the store, or from a run document file; a threshold over every error names none
    cli = runner.invoke(app, ["precision", "compare", candidate["run_id"][:8], str(out), "--db", db,
                              "--threshold", "0.1", "-f", "json"])
    assert cli.exit_code == 0, cli.output
    report = json.loads(cli.output)
    assert report["first_over"] is None and report["threshold"] == 0.1
    assert (report["candidate"], report["baseline"]) == ("910B3 float32 TP1", "cpu float32 TP1")
    same = runner.invoke(app, ["precision", "compare", str(out), str(out)])  # alike sides: named by what was given
    assert same.exit_code == 0 and f"**Per-layer precision**, {out} vs {out}: no layer reaches 0.01" in same.output
    layer = doc["precision"]["layers"][1]  # the estimate of a 5% difference: 5% of the sketch's norm
    expected = 0.05 * np.linalg.norm(precision.decode(layer["sketch"]).astype(np.float64)) / layer["l2"]
    assert math.isclose(report["layers"][1]["rel_error"], expected, rel_tol=1e-5) and abs(expected / 0.05 - 1) < 0.1

    # one line and exit 2: a run without a precision section, another sketch size, an unknown id
    reference = rundoc.read(REPO / "examples" / "reference-A100.json")
    store.push(engine, reference)
    resized = copy.deepcopy(doc)
    resized["precision"]["sketch"]["size"] = 1024
    (tmp_path / "resized.json").write_text(json.dumps(resized))
    for args, message in [([reference["run_id"], str(out)], "has no precision section"),
                          ([str(tmp_path / "resized.json"), str(out)], "sketches differ"),
                          (["nosuchrun", str(out)], "no run in the store has that id")]:
        bad = runner.invoke(app, ["precision", "compare", *args, "--db", db])
        assert bad.exit_code == 2 and message in bad.output and bad.output.count("\n") == 1, bad.output


def test_dashboard_compare_page_plots_the_pair(tmp_path, smoke_run):
    from streamlit.testing.v1 import AppTest

    doc = rundoc.read(smoke_run)
    engine = open_store(None)  # the test's own store (conftest), which the dashboard reads too
    store.push(engine, _other_device(doc, "910B3", scale_from=2))
    store.push(engine, _other_device(doc, "A100"))
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60).run()
    at.switch_page("views/compare.py").run()
    at.selectbox(key="job").set_value(doc["job"]["fingerprint"]).run()
    assert not at.exception
    assert "Per-layer precision" in [h.value for h in at.subheader]
    shown = "\n".join(m.value for m in at.markdown)
    assert "estimated from the runs' sketches: first layer at or over 0.01: **norm**" in shown
    assert "top-1 agreement **100.00%**" in shown
    assert at.get("vega_lite_chart")  # the error-against-depth plot
    at.select_slider(key="precision_threshold").set_value(0.1).run()
    assert "no layer reaches 0.1" in "\n".join(m.value for m in at.markdown)

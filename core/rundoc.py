"""Run documents: one JSON file per run, the unit that is written (`submit --out`), pushed, and replayed.

The format is versioned ("devcompare.run/1") and described by core/schema/run-document-v1.json; every document
is validated against it before it is written or pushed.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import cache
from pathlib import Path

from core.errors import UserError
from core.files import write_atomic

FORMAT = "devcompare.run/1"
SCHEMA_PATH = Path(__file__).parent / "schema" / "run-document-v1.json"


@cache
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def validate(doc: dict, origin: str = "run document") -> dict:
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise UserError(f"{origin}: invalid at {where}: {e.message}")
    return doc


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_document(*, device: dict, environment: dict, job_name: str, fingerprint: str, spec: dict,
                 started_at: str) -> dict:
    return {"format": FORMAT, "run_id": str(uuid.uuid4()), "source": "measured", "imported_from": None,
            "missing": [], "started_at": started_at, "finished_at": started_at, "device": device,
            "environment": environment, "job": {"name": job_name, "fingerprint": fingerprint, "spec": spec},
            "perf": [], "humaneval": None}


def write(doc: dict, path: str | Path) -> None:
    """Validate, then write atomically (core.files): a crash leaves the old file or none, never half a document."""
    validate(doc)
    write_atomic(path, json.dumps(doc, indent=1) + "\n")


def read(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"run document not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise UserError(f"{path}: not a run document (format {found!r}, expected {FORMAT!r})")
    return validate(doc, str(path))

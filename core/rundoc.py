"""Run documents: one JSON file per run, the unit that is written (`submit --out`), pushed, and replayed.

The format is versioned and each version is described by its JSON Schema in core/schema/: "devcompare.run/2"
(written now) adds optional sections to "devcompare.run/1", whose documents are still read, validated and pushed as
they are. Every document is validated against its version's schema before it is written or pushed.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import cache
from pathlib import Path

from core.errors import UserError
from core.files import write_atomic

FORMAT = "devcompare.run/2"
SCHEMAS = {f"devcompare.run/{v}": Path(__file__).parent / "schema" / f"run-document-v{v}.json" for v in (1, 2)}


@cache
def _validator(format_name: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMAS[format_name].read_text()))


def validate(doc: dict, origin: str = "run document") -> dict:
    """`doc` itself if it is valid against its own format's schema; otherwise a one-line UserError."""
    found = doc.get("format") if isinstance(doc, dict) else None
    if found not in SCHEMAS:
        raise UserError(f"{origin}: not a run document (format {found!r}, expected one of {', '.join(SCHEMAS)})")
    errors = sorted(_validator(found).iter_errors(doc), key=lambda e: list(e.absolute_path))
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
            "perf": [], "humaneval": None, "precision": None}


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
    return validate(doc, str(path))

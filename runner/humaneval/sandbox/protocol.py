"""The sandbox's two wire formats.

Parent <-> worker, JSON lines on the worker's stdin/stdout:

    worker -> {"protections": [...], "uid": 65100}                   once, when ready
    parent -> {"program": "..."}                                     a job (the parent may queue one more)
    worker -> {"result": "passed", "exec_s": 0.01, "output": "..."}  or {"error": "..."} when the sandbox failed

Child -> worker, on the child's fd 3: "ready\\n" once confined (or "setup error: ...\\n"), then a verdict frame
carrying a per-job token, so that a completion cannot fake a verdict or a sandbox failure just by writing to fd 3.
The child runs in the interpreter that reports its verdict, so a determined completion can still forge it (as in
human-eval): the sandbox guarantees containment, not honesty.
"""
import json

RESULT_CAP = 1 << 20  # bytes of a child's report kept by the worker
READY = b"ready\n"
SETUP_ERROR = b"setup error: "


def message(obj: dict) -> bytes:
    """One line of the parent <-> worker protocol."""
    return json.dumps(obj).encode() + b"\n"


def messages(buf: bytes) -> tuple:
    """(the complete messages in `buf`, the incomplete rest)."""
    *complete, rest = buf.split(b"\n")
    return [json.loads(line) for line in complete], rest


def frame(token: str, result: str, output: str) -> bytes:
    """The child's verdict: `TOKEN RESULT_BYTES OUTPUT_BYTES\\n` then both texts (cheaper in a child than json,
    whose encoder would first have to be paged in). surrogatepass keeps any str an exception message can hold."""
    r = result[: RESULT_CAP // 8].encode("utf-8", "surrogatepass")  # <= 4 bytes a char: the frame fits the cap
    o = output.encode("utf-8", "surrogatepass")
    return b"%s %d %d\n%s%s" % (token.encode(), len(r), len(o), r, o)


def unframe(data: bytes, token: str) -> dict:
    """{"result", "output"} from the first frame of this job's token in what the child wrote after "ready"; {} if
    there is none, or it is cut short (the child was killed while writing it)."""
    data = b"\n" + data
    start = data.find(b"\n" + token.encode() + b" ")
    if start < 0:
        return {}
    head, _, body = data[start + len(token) + 2:].partition(b"\n")
    try:
        r, o = map(int, head.split(b" "))
    except ValueError:
        return {}
    if r < 0 or o < 0 or len(body) < r + o:
        return {}
    try:
        return {"result": body[:r].decode("utf-8", "surrogatepass"),
                "output": body[r:r + o].decode("utf-8", "surrogatepass")}
    except UnicodeDecodeError:  # not written by frame(): a completion that found the token; no verdict
        return {}


def report(data: bytes, token: str) -> dict:
    """What a child wrote on fd 3: {"setup_error": text}, or its verdict as unframe() gives it ({} for none).

    The first line, "ready" or a setup error, was written before the completion ran, so it is not forged by it."""
    first, _, rest = data.partition(b"\n")
    if first + b"\n" != READY:
        if first.startswith(SETUP_ERROR):
            return {"setup_error": first[len(SETUP_ERROR):].decode("utf-8", "replace")}
        return {}  # killed or exited before its setup was done
    return unframe(rest, token)

"""A streaming client for OpenAI-compatible `/v1/completions`: one request's timing, text, token counts and, when it
fails, why; and what a server says about itself and which request fields it accepts.

Times are `time.perf_counter()` seconds taken as each server-sent event line arrives. A request succeeds when its
stream ends with a finish_reason or `data: [DONE]`; anything else is a failure with a reason class (the name the
tables count) and an example message (what was seen).
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx2

from core.errors import RunError, UserError

COMPLETIONS = "/v1/completions"
PROBE_PROMPT = "Say hello."  # capability probes send this prompt (a failure stub lets it through)
# OpenAI's API takes at most 4 stop sequences (vLLM refuses more); completions are cut at every one afterwards
MAX_STOP = 4


@dataclass(slots=True)
class Outcome:
    """One request. `end` stays None while it is in flight; `reason` is None when it succeeded."""
    start: float
    first: float | None = None  # first chunk with text
    chunks: list[float] = field(default_factory=list)  # arrival of every chunk with text
    end: float | None = None
    text: str = ""
    output_tokens: int | None = None  # from the server's usage, when it reports one
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    reason: str | None = None
    example: str | None = None

    def fail(self, reason: str, example: str) -> Outcome:
        self.reason, self.example, self.end = reason, example[:300], self.end or time.perf_counter()
        return self


def base_url(endpoint: str) -> str:
    """`http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all name the same server. A URL that names
    no server (scheme, host, port 1-65535) is the user's to fix: checked here, before anything connects."""
    url = endpoint.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # a port that is not a number, or out of range, raises here rather than at connect
        httpx2.URL(url)
    except (ValueError, httpx2.InvalidURL) as e:
        raise UserError(f"--endpoint {endpoint!r} is not a valid URL ({e}); example: http://127.0.0.1:8000") from None
    if parts.scheme not in ("http", "https"):
        raise UserError(f"--endpoint must be an http:// or https:// URL, got {endpoint!r}")
    if not parts.hostname or any(c.isspace() for c in parts.hostname) or port == 0:
        raise UserError(f"--endpoint {endpoint!r} names no server: give its host and port, e.g. "
                        "http://127.0.0.1:8000")
    return url.removesuffix("/v1")


def new_client(endpoint: str, connections: int) -> httpx2.AsyncClient:
    # no client-side timeout: each request runs under asyncio's own (request_timeout_s, then the run's time limit)
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(base_url=base_url(endpoint), timeout=None, limits=limits, trust_env=False)


# what a request can raise that says the server was not reached or answered no HTTP: httpx2's own errors, and
# socket errors it lets through
TRANSPORT_ERRORS = (httpx2.HTTPError, OSError, OverflowError)
# those escape a task group wrapped in an ExceptionGroup: caught as one, then re-raised unless it holds one of them
CAUGHT = (*TRANSPORT_ERRORS, ExceptionGroup)


def _leaf(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _transport(e: BaseException) -> BaseException:
    """The transport error that `e` is or wraps; a group holding anything else (a bug) goes on up as it is."""
    leaf = _leaf(e)
    if not isinstance(leaf, TRANSPORT_ERRORS):
        raise e
    return leaf


def _classify(e: BaseException) -> str:
    e = _leaf(e)
    if isinstance(e, httpx2.ConnectError):
        cause = e
        while cause is not None and not isinstance(cause, ConnectionRefusedError):
            cause = cause.__cause__ or cause.__context__
        return "connection refused" if cause is not None or "refused" in str(e).lower() else "cannot connect"
    if isinstance(e, (httpx2.RemoteProtocolError, httpx2.ReadError)):
        return "stream cut"
    return "transport error"


def _read(o: Outcome, line: str, now: float) -> bool:
    """Take one server-sent event line into `o`; True at the end of the stream."""
    if not line.startswith("data:"):
        return False  # blank separators, comments, event names
    data = line[5:].strip()
    if data == "[DONE]":
        return True
    chunk = json.loads(data)
    if "error" in chunk:
        raise ValueError(f"error event: {json.dumps(chunk['error'])[:200]}")
    usage = chunk.get("usage")
    if usage:
        o.output_tokens, o.prompt_tokens = usage.get("completion_tokens"), usage.get("prompt_tokens")
    for choice in chunk.get("choices") or ():
        text = choice.get("text")
        if text:
            if o.first is None:
                o.first = now
            o.chunks.append(now)
            o.text += text
        if choice.get("finish_reason"):
            o.finish_reason = choice["finish_reason"]
    return False


async def stream(client: httpx2.AsyncClient, payload: dict, o: Outcome, timeout_s: float) -> Outcome:
    """Send one streaming completion and fill `o` (its `start` already set by the caller)."""
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", COMPLETIONS, json=payload) as r:
                if r.status_code != 200:
                    body = (await r.aread()).decode(errors="replace")
                    return o.fail(f"HTTP {r.status_code}", body.strip() or r.reason_phrase)
                async for line in r.aiter_lines():
                    if _read(o, line, time.perf_counter()):
                        break
        o.end = time.perf_counter()
    except TimeoutError:
        return o.fail("timeout", f"no complete answer within {timeout_s:g} s")
    except CAUGHT as e:
        leaf = _transport(e)
        return o.fail(_classify(leaf), f"{type(leaf).__name__}: {leaf}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # not JSON, or not the shape of a completion
        return o.fail("bad response", str(e))
    if o.finish_reason is None and o.first is None:
        return o.fail("stream cut", "the stream ended without any text or finish_reason")
    if o.finish_reason is None:
        return o.fail("stream cut", f"the stream ended after {len(o.chunks)} chunk(s) without a finish_reason")
    return o


async def _get_json(client: httpx2.AsyncClient, path: str, timeout_s: float):
    """(the GET's JSON body or None, its HTTP status or None when it timed out, the server header)."""
    try:
        async with asyncio.timeout(timeout_s):
            r = await client.get(path)
    except TimeoutError:
        return None, None, None
    header = r.headers.get("server")
    if r.status_code != 200:
        return None, r.status_code, header
    try:
        return r.json(), 200, header
    except ValueError:
        return None, 200, header


async def describe(client: httpx2.AsyncClient, declared_engine: str, timeout_s: float) -> dict:
    """What the server says about itself: its models (/v1/models), its version (/version, where it has one), the
    HTTP server header, and the engine the job declares. A server that cannot be reached, or that has no
    /v1/models (not an OpenAI-compatible server), is a one-line error."""
    base = str(client.base_url).rstrip("/")
    try:
        models, status, header = await _get_json(client, "/v1/models", timeout_s)
    except CAUGHT as e:
        leaf = _transport(e)
        raise RunError(f"cannot reach the server at {base}: {_classify(leaf)} ({leaf})") from None
    if status not in (200, None):
        raise RunError(f"{base}/v1/models answered HTTP {status}: is {base} an OpenAI-compatible server?")
    try:
        version, _, _ = await _get_json(client, "/version", timeout_s)
    except CAUGHT as e:  # reachable a moment ago: a server without /version may also just drop the request
        _transport(e)
        version = None
    listed = [m for m in (models if isinstance(models, dict) else {}).get("data", []) if isinstance(m, dict)]
    return {"endpoint": str(client.base_url), "models": [m.get("id") for m in listed],
            "owned_by": sorted({str(m.get("owned_by")) for m in listed if m.get("owned_by")}),
            "version": version, "server_header": header, "declared_engine": declared_engine}


def served_model(description: dict, wanted: str | None, model_name: str) -> str:
    """The model name requests carry: the job's served_model, else the one model the server lists."""
    listed = [m for m in description["models"] if m]
    if wanted is not None:
        return wanted
    if len(listed) == 1:
        return listed[0]
    match = [m for m in listed if m == model_name or m.rstrip("/").endswith("/" + model_name)]
    if len(match) == 1:
        return match[0]
    raise RunError(f"the server lists {len(listed)} models ({', '.join(listed) or 'none'}): name the one to use "
                   "with serving.served_model in the job")


async def _try(client: httpx2.AsyncClient, payload: dict, timeout_s: float) -> Outcome:
    return await stream(client, payload, Outcome(start=time.perf_counter()), timeout_s)


async def capabilities(client: httpx2.AsyncClient, model: str, stop: list[str], timeout_s: float) -> dict:
    """Which of vLLM's extensions (ignore_eos, min_tokens), `stream_options` and `stop` the server accepts, and
    whether it reports token usage in the stream. All at once first; one by one only when that is refused."""
    base = {"model": model, "prompt": PROBE_PROMPT, "max_tokens": 2, "temperature": 0.0, "stream": True}
    extensions = {"stream_options": {"include_usage": True}, "ignore_eos": True, "min_tokens": 2,
                  "stop": stop[:MAX_STOP]}
    refused = ("HTTP 400", "HTTP 422")
    for _attempt in range(3):  # a server that fails now and then still gets its levels measured
        o = await _try(client, {**base, **extensions}, timeout_s)
        if o.reason is None or o.reason in refused or o.reason.startswith("connection"):
            break
    if o.reason is None:
        return {**dict.fromkeys(extensions, True), "usage_in_stream": o.output_tokens is not None}
    if o.reason not in refused:
        raise RunError(f"the server does not answer {COMPLETIONS}: {o.reason}: {o.example}")
    usage = (plain := await _try(client, base, timeout_s)).output_tokens is not None
    if plain.reason is not None:
        raise RunError(f"the server does not answer {COMPLETIONS} for model {model!r}: {plain.reason}: {plain.example}")
    accepted = {}
    for key, value in extensions.items():
        single = await _try(client, {**base, key: value}, timeout_s)
        accepted[key] = single.reason is None
        if key == "stream_options" and accepted[key]:
            usage = single.output_tokens is not None
    return {**accepted, "usage_in_stream": usage}

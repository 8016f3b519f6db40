"""A stub OpenAI-compatible server for checking the client: it streams `max_tokens` chunks at once (or one every
`gap_s`), or fails on purpose, request after request, by a plan: "ok", "500", "cut" (the stream stops mid-way, the
connection closed without the end of the chunked body), "hang" (headers, then nothing until the client gives up).

`strict` answers 422 to vLLM's extensions as `transformers serve` does. Capability probes (runner.serving.client's
PROBE_PROMPT) always succeed, so a run gets past them to its levels.

    python -m runner.serving.stub --port 8100 --plan ok,500,cut,hang
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading

from runner.serving.client import COMPLETIONS, PROBE_PROMPT

MODEL = "stub-model"
EXTENSIONS = ("ignore_eos", "min_tokens", "max_completion_tokens")
PLANS = ("ok", "500", "cut", "hang")
_REASONS = {200: "OK", 404: "Not Found", 422: "Unprocessable Entity", 500: "Internal Server Error"}


class Stub:
    def __init__(self, plan: tuple[str, ...] = ("ok",), gap_s: float = 0.0, strict: bool = False):
        unknown = set(plan) - set(PLANS)
        if unknown:
            raise ValueError(f"unknown plan step(s) {sorted(unknown)}; known: {', '.join(PLANS)}")
        self.plan, self.gap_s, self.strict = itertools.cycle(plan), gap_s, strict
        self.completions = 0  # completion requests answered, probes included

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader, writer) -> bool:
        """Answer one request; False when the connection is done."""
        line = await reader.readline()
        if not line:
            return False
        method, path, _ = line.decode().split(" ", 2)
        headers = {}
        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = h.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        if method == "GET":
            answers = {"/health": {"status": "ok"}, "/version": {"version": "stub"},
                       "/v1/models": {"object": "list", "data": [{"id": MODEL, "owned_by": "stub"}]}}
            return await self._json(writer, 200 if path in answers else 404, answers.get(path, {"detail": "Not Found"}))
        if path != COMPLETIONS:
            return await self._json(writer, 404, {"detail": "Not Found"})
        self.completions += 1
        request = json.loads(body)
        extra = [k for k in EXTENSIONS if k in request]
        if self.strict and extra:
            return await self._json(writer, 422, {"detail": f"Unexpected fields in the request: {extra}"})
        step = "ok" if request.get("prompt") == PROBE_PROMPT else next(self.plan)
        if step == "500":
            return await self._json(writer, 500, {"error": {"message": "stub: planned failure"}})
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        if step == "hang":
            await writer.drain()
            await reader.read()  # until the client closes the connection
            return False
        return await self._stream(writer, request, cut=step == "cut")

    async def _stream(self, writer, request: dict, cut: bool) -> bool:
        tokens = int(request.get("max_tokens") or 16)
        event = "data: " + json.dumps({"object": "text_completion", "model": MODEL,
                                       "choices": [{"index": 0, "text": " tok", "finish_reason": None}]}) + "\n\n"
        for i in range(tokens):
            if cut and i == max(1, tokens // 2):
                writer.write(b"5\r\ndata:")  # half a chunk, then the connection goes
                await writer.drain()
                writer.transport.abort()
                return False
            _chunk(writer, event)
            await writer.drain()
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
        last = {"object": "text_completion", "model": MODEL, "choices": [{"index": 0, "text": "",
                                                                           "finish_reason": "length"}]}
        if (request.get("stream_options") or {}).get("include_usage"):
            last["usage"] = {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": tokens + 8}
        _chunk(writer, "data: " + json.dumps(last) + "\n\ndata: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _json(self, writer, status: int, payload: dict) -> bool:
        body = json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return True


def _chunk(writer, text: str) -> None:
    data = text.encode()
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def serve_in_thread(stub: Stub, host: str = "127.0.0.1") -> tuple[str, callable]:
    """Start `stub` on a free port in a daemon thread; returns (its URL, stop())."""
    ready, box = threading.Event(), {}

    async def serve():
        server = await asyncio.start_server(stub.handle, host, 0)
        box.update(loop=asyncio.get_running_loop(), stop=asyncio.Event(), port=server.sockets[0].getsockname()[1])
        ready.set()
        await box["stop"].wait()
        server.close()  # asyncio.run then cancels the connections still open (a hung stream)

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="serving-stub").start()
    ready.wait(10)
    return f"http://{host}:{box['port']}", lambda: box["loop"].call_soon_threadsafe(box["stop"].set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--plan", default="ok", help=f"comma-separated steps, cycled: {', '.join(PLANS)}")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause between streamed chunks")
    parser.add_argument("--strict", action="store_true", help="422 to ignore_eos / min_tokens, as transformers serve")
    args = parser.parse_args()
    stub = Stub(tuple(args.plan.split(",")), args.gap_ms / 1000, args.strict)

    async def serve():
        server = await asyncio.start_server(stub.handle, args.host, args.port)
        async with server:
            await server.serve_forever()
    asyncio.run(serve())


if __name__ == "__main__":
    main()

"""The service's routes.

``POST /generate`` takes ``{"inputs": "text"}`` or ``{"inputs": ["text", ...]}`` and answers
``{"outputs": ["...", ...]}`` (always a list, in input order). ``GET /health`` answers the backend,
the batching counters, the error counts and the process's resident memory. Every error is JSON,
``{"error": "one line saying what is wrong and what to send"}``, counted by ``/health``, and changes
nothing else: 400 body not UTF-8 / not JSON (numbers too long, nesting too deep included), 408 body
not sent within the read timeout, 413 body, input count, input length or request cost (inputs x
tokens) over the limits, 415 Content-Type not JSON, 422 JSON of the wrong shape (not an object,
unknown or missing field, wrong type, empty input, empty after tokenizing, a lone surrogate), 503 the
queue of waiting inputs is full (retry later). The body size is enforced while reading (chunked
bodies too). A request whose client has gone is dropped before its batch runs. A failure inside the
model answers 500 for the requests of that batch; the service stays up.
"""

import asyncio
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mist_fairseq.serve.batcher import DynamicBatcher, QueueFull

logger = logging.getLogger("mist_fairseq.serve")

USAGE = 'send {"inputs": ["text", ...]}'


@dataclass
class Limits:
    max_inputs: int = 64  # inputs per request
    max_input_chars: int = 2000  # characters per input (tokens are checked against the model's limit too)
    max_request_tokens: int = 8192  # WordPiece tokens of all a request's inputs: what one request may cost
    read_timeout_s: float = 10.0  # the body must arrive within this

    @property
    def max_body_bytes(self) -> int:  # every input at its longest, 4 bytes a character, and JSON around it
        return self.max_inputs * (self.max_input_chars * 4 + 16) + 1024


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def rss_mb() -> float:
    """Resident memory of this process (MiB), from /proc (Linux); -1 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return -1.0


def parse_request(body: bytes, limits: Limits, backend) -> list:
    """The request body -> its list of inputs, or BadRequest naming what is wrong."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, f"request body of {len(body)} bytes; at most {limits.max_body_bytes}: split the request")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"request body is not UTF-8 (byte {e.start} is 0x{body[e.start]:02x}): "
                              f"encode the JSON in UTF-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest(400, f"request body is not JSON ({e.msg}, line {e.lineno} column {e.colno}): {USAGE}")
    except (ValueError, RecursionError) as e:  # a number of thousands of digits, nesting too deep
        raise BadRequest(400, f"request body is not JSON this service reads ({type(e).__name__}: "
                              f"{str(e)[:80]}): {USAGE}")
    if not isinstance(data, dict):
        raise BadRequest(422, f"the body is a JSON {type(data).__name__}, not an object: {USAGE}")
    unknown = sorted(set(data) - {"inputs"})
    if unknown:
        raise BadRequest(422, f"unknown field(s) {', '.join(map(repr, unknown))}: {USAGE}")
    if "inputs" not in data:
        raise BadRequest(422, f"missing field 'inputs': {USAGE}")
    inputs = data["inputs"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list):
        raise BadRequest(422, f"'inputs' is a JSON {type(inputs).__name__}: it must be a string or a list of strings")
    if not inputs:
        raise BadRequest(422, f"'inputs' is an empty list: {USAGE}")
    if len(inputs) > limits.max_inputs:
        raise BadRequest(413, f"{len(inputs)} inputs; at most {limits.max_inputs} per request: split the request")
    total = 0
    for i, s in enumerate(inputs):
        if not isinstance(s, str):
            raise BadRequest(422, f"inputs[{i}] is a JSON {type(s).__name__}: every input must be a string")
        if not s.strip():
            raise BadRequest(422, f"inputs[{i}] is empty: every input needs some text")
        if len(s) > limits.max_input_chars:
            raise BadRequest(413, f"inputs[{i}] has {len(s)} characters; at most {limits.max_input_chars}")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadRequest(422, f"inputs[{i}] holds a lone surrogate (\\u{ord(s[e.start]):04x} at character "
                                  f"{e.start}): send text, not half of a UTF-16 pair")
        n = backend.encode(s).numel()
        if n <= 1:  # [SEP] only
            raise BadRequest(422, f"inputs[{i}] has no WordPiece tokens once tokenized: send some text")
        if n > backend.max_source_tokens:
            raise BadRequest(413, f"inputs[{i}] has {n} WordPiece tokens; this model takes at most "
                                  f"{backend.max_source_tokens}: shorten it")
        total += n
        if total > limits.max_request_tokens:
            raise BadRequest(413, f"inputs[0..{i}] hold {total} WordPiece tokens; at most "
                                  f"{limits.max_request_tokens} a request: split the request")
    return inputs


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body, read chunk by chunk: over the size limit -> 413 at once (a chunked body is never
    held whole); a body (or its declared length) not arriving within the read timeout -> 408."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:  # refuse before reading it
        raise BadRequest(413, f"request body of {declared} bytes; at most {limits.max_body_bytes}: split the request")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    deadline = time.monotonic() + limits.read_timeout_s
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise BadRequest(408, f"request body not received within {limits.read_timeout_s:g} s "
                                  f"({size} bytes came): send the whole body")
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise BadRequest(413, f"request body over {limits.max_body_bytes} bytes: split the request")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(backend, name: str, limits: Limits = None, max_batch: int = 32, max_wait_ms: float = 5.0,
              max_queue: int = 1024, docs: bool = False, housekeeping=None, housekeeping_every_s: float = 1.0) -> FastAPI:
    """backend: see :mod:`mist_fairseq.serve.backends`; name: what /health reports it as; max_queue:
    inputs that may wait for the model (more: 503); docs: serve /docs and /openapi.json; housekeeping:
    called between batches at most once per housekeeping_every_s seconds (the allocator's trim)."""
    limits = limits or Limits()
    batcher = DynamicBatcher(backend.generate, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             housekeeping=housekeeping, housekeeping_every_s=housekeeping_every_s)
    counts = {"rejected": 0, "failed": 0, "overloaded": 0, "gone": 0}

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        logger.info("serving %s (max batch %d, wait %.1f ms, at most %d inputs of %d characters a request)",
                    name, max_batch, max_wait_ms, limits.max_inputs, limits.max_input_chars)
        yield
        await batcher.stop()

    app = FastAPI(title="mist_fairseq", lifespan=lifespan, **({} if docs else
                  {"docs_url": None, "redoc_url": None, "openapi_url": None}))
    app.state.batcher = batcher

    @app.exception_handler(Exception)
    async def any_error(request: Request, e: Exception):  # never a plain-text 500
        counts["failed"] += 1
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(e).__name__}"}, status_code=500)

    async def until_gone(request: Request):
        while not await request.is_disconnected():
            await asyncio.sleep(0.05)

    @app.post("/generate")
    async def generate(request: Request):
        t = time.perf_counter()
        try:
            if not is_json(request.headers.get("content-type", "")):
                raise BadRequest(415, "Content-Type must be application/json: send the body as JSON with that "
                                      "header (curl -H 'Content-Type: application/json')")
            inputs = parse_request(await read_body(request, limits), limits, backend)
            job = batcher.enqueue(inputs)
        except (BadRequest, QueueFull) as e:
            status = e.status if isinstance(e, BadRequest) else 503
            counts["rejected" if status != 503 else "overloaded"] += 1
            logger.warning("rejected (%d): %s", status, e)
            return JSONResponse({"error": str(e)}, status_code=status)
        gone = asyncio.ensure_future(until_gone(request))
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done():  # the client left: its inputs are dropped unless their batch already runs
            job.cancel()
            counts["gone"] += 1
            return JSONResponse({"error": "client disconnected"}, status_code=499)
        gone.cancel()
        try:
            outputs = job.result()
        except Exception as e:
            counts["failed"] += 1
            return JSONResponse({"error": f"generation failed: {type(e).__name__}: {e}"}, status_code=500)
        return {"outputs": outputs, "ms": round((time.perf_counter() - t) * 1000, 2)}

    @app.get("/health")
    async def health():
        s = batcher.stats
        return {"status": "ok", "backend": name, **s, **counts, "queued": batcher.queued,
                "requests_per_batch": s["requests"] / s["batches"] if s["batches"] else 0.0,
                "rss_mb": round(rss_mb(), 1)}

    return app

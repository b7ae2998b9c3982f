"""The service's routes.

``POST /generate`` takes ``{"inputs": "text"}`` or ``{"inputs": ["text", ...]}`` and answers
``{"outputs": ["...", ...]}`` (always a list, in input order). ``GET /health`` answers the backend,
the batching counters and the process's resident memory. A malformed request gets a 4xx with
``{"error": "one line saying what is wrong and what to send"}`` and changes nothing else:
400 body not UTF-8 / not JSON, 413 body, input count or input length over the limits, 422 JSON of
the wrong shape (not an object, unknown or missing field, wrong type, empty input). A failure inside
the model answers 500 for the requests of that batch; the service stays up.
"""

import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mist_fairseq.serve.batcher import DynamicBatcher

logger = logging.getLogger("mist_fairseq.serve")

USAGE = 'send {"inputs": ["text", ...]}'


@dataclass
class Limits:
    max_inputs: int = 64  # inputs per request
    max_input_chars: int = 2000  # characters per input (tokens are checked against the model's limit too)

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
    for i, s in enumerate(inputs):
        if not isinstance(s, str):
            raise BadRequest(422, f"inputs[{i}] is a JSON {type(s).__name__}: every input must be a string")
        if not s.strip():
            raise BadRequest(422, f"inputs[{i}] is empty: every input needs some text")
        if len(s) > limits.max_input_chars:
            raise BadRequest(413, f"inputs[{i}] has {len(s)} characters; at most {limits.max_input_chars}")
        n = backend.encode(s).numel()
        if n > backend.max_source_tokens:
            raise BadRequest(413, f"inputs[{i}] has {n} WordPiece tokens; this model takes at most "
                                  f"{backend.max_source_tokens}: shorten it")
    return inputs


def build_app(backend, name: str, limits: Limits = None, max_batch: int = 32, max_wait_ms: float = 5.0) -> FastAPI:
    """backend: see :mod:`mist_fairseq.serve.backends`; name: what /health reports it as."""
    limits = limits or Limits()
    batcher = DynamicBatcher(backend.generate, max_batch=max_batch, max_wait_ms=max_wait_ms)
    counts = {"rejected": 0, "failed": 0}

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        logger.info("serving %s (max batch %d, wait %.1f ms, at most %d inputs of %d characters a request)",
                    name, max_batch, max_wait_ms, limits.max_inputs, limits.max_input_chars)
        yield
        await batcher.stop()

    app = FastAPI(title="mist_fairseq", lifespan=lifespan)
    app.state.batcher = batcher

    @app.post("/generate")
    async def generate(request: Request):
        t = time.perf_counter()
        try:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_body_bytes:  # refuse before reading it
                raise BadRequest(413, f"request body of {declared} bytes; at most {limits.max_body_bytes}: "
                                      "split the request")
            inputs = parse_request(await request.body(), limits, backend)
        except BadRequest as e:
            counts["rejected"] += 1
            logger.warning("rejected (%d): %s", e.status, e)
            return JSONResponse({"error": str(e)}, status_code=e.status)
        try:
            outputs = await batcher.submit(inputs)
        except Exception as e:
            counts["failed"] += 1
            return JSONResponse({"error": f"generation failed: {type(e).__name__}: {e}"}, status_code=500)
        return {"outputs": outputs, "ms": round((time.perf_counter() - t) * 1000, 2)}

    @app.get("/health")
    async def health():
        s = batcher.stats
        return {"status": "ok", "backend": name, **s, **counts,
                "requests_per_batch": s["requests"] / s["batches"] if s["batches"] else 0.0,
                "rss_mb": round(rss_mb(), 1)}

    return app

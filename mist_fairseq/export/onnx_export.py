"""Writes a trained ``mist_nar`` checkpoint as two ONNX graphs (:mod:`mist_fairseq.export.graphs`)
plus what the runner needs to tokenize and decode: ``vocab.txt``, ``dict.src.txt`` and
``mist_export.json`` (special ids, length limits, the checkpoint's decoding options). With
``int8=True`` it also writes dynamically quantized copies (int8 weights of every MatMul, activations
quantized per call: onnxruntime's ``quantize_dynamic``) beside the fp32 graphs.
"""

import dataclasses
import json
import logging
import os
import shutil
from typing import Dict, List, Tuple

import torch

from mist_fairseq.export import folder
from mist_fairseq.export.graphs import (SHORTLIST_INPUTS, SOURCE_INPUTS, SOURCE_OUTPUTS, TARGET_INPUTS,
                                        TARGET_OUTPUTS, SourceGraph, TargetGraph)
from mist_fairseq.generators.options import DecodeOptions

logger = logging.getLogger(__name__)

FORMAT = "mist_fairseq-onnx"
FORMAT_VERSION = 1
CTC_FORMAT_VERSION = 2
SHORTLIST_FORMAT_VERSION = 3  # the highest version this release reads: the target graph takes vocab
CONFIG = "mist_export.json"
GRAPHS = {"fp32": ("source.onnx", "target.onnx"), "int8": ("source.int8.onnx", "target.int8.onnx")}
SHORTLIST = "shortlist.npz"  # an output shortlist's table (frequent, neighbours, always), for the runner


def _quiet_exporter():
    # the exporter's passes log every rewrite at DEBUG/INFO through the root logger fairseq configures
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.WARNING)


def export_graphs(model, out_dir: str, opset: int = 18, names=GRAPHS["fp32"], own_output_weight: bool = False) -> None:
    """model: a ``MistNARModel`` (any size); writes the source and target graphs (names; a None name is
    not written) with dynamic batch, source width and target width (limits: the model's own).
    own_output_weight: see :class:`~mist_fairseq.export.graphs.TargetGraph`."""
    _quiet_exporter()
    # not chained: after Fairseq's make_generation_fast_ (the hub calls it) train()/eval() return None
    model.float()
    model.eval()
    dev = next(model.parameters()).device
    max_src = model.num_positions - 1 - model.max_target_positions  # mixed sources included
    B = torch.export.Dim("batch", min=1, max=4096)
    S = torch.export.Dim("src", min=2, max=max_src)
    S1 = torch.export.Dim("src_cls", min=3, max=max_src + 1)
    T = torch.export.Dim("tgt", min=1, max=model.max_target_positions)
    # example inputs: batch and widths > 1 (the exporter specialises dimensions of size 1)
    pad, eos = model.pad, model.eos
    word = next(i for i in range(200) if i not in (pad, eos, model.bos, model.mask_idx))
    src = torch.tensor([[word, word, word, eos], [word, eos, pad, pad]], device=dev)
    with torch.no_grad():
        if names[0] is not None:
            torch.onnx.export(SourceGraph(model), (src,), os.path.join(out_dir, names[0]),
                              input_names=SOURCE_INPUTS, output_names=SOURCE_OUTPUTS,
                              dynamic_shapes={"src_tokens": {0: B, 1: S}}, dynamo=True, opset_version=opset,
                              external_data=False)
        state = model.encode_source(src)
        keys = torch.stack([k for k, _ in state.kv])
        values = torch.stack([v for _, v in state.kv])
        tgt = model.masked_target(torch.tensor([4, 3], device=dev), src_tokens=src)
        inputs = (keys, values, state.key_mask, state.length, tgt)
        shapes = {"keys": {1: B, 3: S1}, "values": {1: B, 3: S1}, "key_mask": {0: B, 1: S1},
                  "src_length": {0: B}, "tgt_tokens": {0: B, 1: T}}
        names_in = TARGET_INPUTS
        if state.vocab is not None:  # an output shortlist: the candidates are an input (C > 1 when traced)
            inputs, names_in = inputs + (state.vocab,), SHORTLIST_INPUTS
            shapes["vocab"] = {0: torch.export.Dim("candidates", min=2, max=model.mlm_head.bias.numel())}
        torch.onnx.export(TargetGraph(model, own_output_weight), inputs, os.path.join(out_dir, names[1]),
                          input_names=names_in, output_names=TARGET_OUTPUTS, dynamic_shapes=shapes,
                          dynamo=True, opset_version=opset, external_data=False)


def weight_products(path: str) -> Tuple[List[str], List[str]]:
    """The graph's MatMul nodes that multiply by a weight (an initializer), and every other
    MatMul/Gemm node (attention's activation products, the length head's Gemm)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    keep, other = [], []
    for n in graph.node:
        if n.op_type in ("MatMul", "Gemm"):
            (keep if n.op_type == "MatMul" and n.input[1] in weights else other).append(n.name)
    return keep, other


def quantize_graphs(model, out_dir: str, opset: int = 18) -> None:
    """int8 graphs: onnxruntime's dynamic quantization of the weight products (weights int8 per output
    channel, activations quantized per call; no calibration data), the output projection included (the
    target graph is exported again for it, with the projection's own copy of tied weights; with an output
    shortlist the projection's gathered rows stay fp32); the source
    graph has no output head and is quantized from the fp32 one). Attention's
    activation-by-activation products and the length head stay fp32: a length off by one changes the
    whole output."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target_tmp = GRAPHS["int8"][1] + ".fp32.tmp"
    # with an output shortlist the projection multiplies by gathered rows, which dynamic quantization
    # leaves fp32 (not a weight initializer): no own copy of tied weights then, only the table itself
    shortlisted = bool(getattr(model, "shortlist_size", 0))
    export_graphs(model, out_dir, opset, names=(None, target_tmp), own_output_weight=not shortlisted)
    sources = [GRAPHS["fp32"][0], target_tmp]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns through the root logger about optional pre-processing
    try:
        for fp32, int8 in zip(sources, GRAPHS["int8"]):
            path = os.path.join(out_dir, fp32)
            _, other = weight_products(path)
            # MatMul only: a quantized Gather would turn the word embeddings into an int8 table
            # dequantized in full on every call
            quantize_dynamic(path, os.path.join(out_dir, int8), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=other)
    finally:
        root.setLevel(level)
        if os.path.exists(os.path.join(out_dir, target_tmp)):
            os.remove(os.path.join(out_dir, target_tmp))


def export(hub, out_dir: str, int8: bool = False, opset: int = 18, checkpoint: str = None) -> Dict:
    """hub: a loaded :class:`~mist_fairseq.inference.MistModel`. Writes the graphs, the vocabulary and
    ``mist_export.json`` (with each file's size and SHA-256) into out_dir, whole or not at all
    (:mod:`mist_fairseq.export.folder`: built beside it, then renamed; a previous export folder there is
    replaced, a folder holding other files refused). checkpoint: the file it came from, recorded in the
    config. Returns the config written."""
    from mist_fairseq.models.mist_nar import MistNARModel

    model, tcfg = hub.models[0], hub.task.cfg
    if not isinstance(model, MistNARModel):
        raise ValueError(f"{checkpoint or 'the checkpoint'} holds a {type(model).__name__}, not a mist_nar model: "
                         "only mist_nar checkpoints export (Fairseq's AR transformer converts with CTranslate2)")
    if getattr(model, "shortlist_size", 0) and not bool(model.shortlist_ready):
        raise ValueError(f"{checkpoint or 'the checkpoint'} has --output-shortlist {model.shortlist_size} but no "
                         "table (it never trained): train it, or give it one with python -m mist_fairseq.add_shortlist")
    precisions = ["fp32", "int8"] if int8 else ["fp32"]
    graphs = {p: dict(zip(("source", "target"), GRAPHS[p])) for p in precisions}
    known = [CONFIG, CONFIG + ".tmp", "vocab.txt", "dict.src.txt", GRAPHS["int8"][1] + ".fp32.tmp", SHORTLIST]
    known += [f for names in GRAPHS.values() for f in names]
    work = folder.start(out_dir, known)
    try:
        config = _write(model, tcfg, work, precisions, graphs, opset, checkpoint)
        folder.finish(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return config


def exported_decoding(tcfg, ctc: bool) -> DecodeOptions:
    """The checkpoint's decoding options as the graphs run them: one NAR pass (CTC's for a CTC
    checkpoint, with no length candidates), no AR rescoring, in the graphs' own precision."""
    options = DecodeOptions.from_task(tcfg)
    mode = {"decode_mode": "ctc", "length_beam": 1} if ctc else {"decode_mode": "nar"}
    return dataclasses.replace(options, rerank="none", rerank_path=None, decode_precision="fp32", **mode)


def _write(model, tcfg, out_dir, precisions, graphs, opset, checkpoint) -> Dict:
    export_graphs(model, out_dir, opset)
    if "int8" in precisions:
        quantize_graphs(model, out_dir, opset)
    data = tcfg.data.split(os.pathsep)[0]
    for name in ("vocab.txt", "dict.src.txt"):
        shutil.copyfile(os.path.join(data, name), os.path.join(out_dir, name))
    files = ["vocab.txt", "dict.src.txt"] + [f for g in graphs.values() for f in g.values()]
    shortlist = None
    if getattr(model, "shortlist_size", 0):
        import numpy as np

        np.savez(os.path.join(out_dir, SHORTLIST), frequent=model.shortlist_frequent.cpu().numpy(),
                 neighbours=model.shortlist_neighbours.cpu().numpy(), always=model.shortlist_always.cpu().numpy())
        files.append(SHORTLIST)
        shortlist = {"file": SHORTLIST, "size": model.shortlist_size,
                     "neighbours": int(model.shortlist_neighbours.size(1))}
    # a runner that predates CTC would decode a CTC export as a length-head one: it refuses version 2; one
    # that predates the shortlist would not feed the candidates: version 3
    version = SHORTLIST_FORMAT_VERSION if shortlist else CTC_FORMAT_VERSION if model.ctc else FORMAT_VERSION
    config = {
        "format": FORMAT, "version": version, "opset": opset,
        "precisions": precisions,
        "graphs": graphs,
        "files": folder.digests(out_dir, files),  # the runner refuses a folder that does not match
        "ids": {"pad": model.pad, "eos": model.eos, "bos": model.bos, "mask": model.mask_idx},
        "target_input": model.target_input,
        # a CTC checkpoint: the same two graphs, the target one run over upsampled [MASK] slots
        "ctc": ({"blank": model.blank_idx, "upsample_ratio": model.upsample_ratio, "min_slots": model.ctc_min_slots}
                if model.ctc else None),
        "shortlist": shortlist,
        "max_source_positions": tcfg.max_source_positions,  # [CLS] included
        "max_target_positions": model.max_target_positions,
        "num_positions": model.num_positions,
        "left_pad_source": bool(tcfg.left_pad_source),
        "bpe_cased": False,  # --bpe bert, uncased: what MistModel uses
        "decoding": exported_decoding(tcfg, model.ctc).to_dict(),
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "torch": torch.__version__,
    }
    tmp = os.path.join(out_dir, CONFIG + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, CONFIG))
    return config

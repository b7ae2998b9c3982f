"""The timed systems of benchmarks.latency: MIST in each decoding mode and Fairseq's AR
transformer, NAT, CMLM and LevT, each a :class:`System` whose ``fn(sample, gold_len)`` decodes one batch."""

import os
import sys

import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
from fairseq.sequence_generator import SequenceGenerator

from mist_fairseq.generators.block_generator import ARGenerator, SemiNARGenerator
from mist_fairseq.generators.ctc_generator import CTCGenerator
from mist_fairseq.generators.mist_generator import MistGenerator, last_real
from mist_fairseq.generators.precision import with_precision
from mist_fairseq.generators.rerank import ARRescorer


def build(argv):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).eval()
    return task, model


def baseline_dir(mist_bin, tmp):
    """A data folder whose dict files Fairseq's standard Dictionary reads: BERT's tokens after
    Fairseq's 4 specials, so a BERT id i is id i + 4 there."""
    d = os.path.join(tmp, "fairseq_dict")
    os.makedirs(d, exist_ok=True)
    for lang in ("src", "tgt"):
        with open(os.path.join(mist_bin, f"dict.{lang}.txt")) as f, open(os.path.join(d, f"dict.{lang}.txt"), "w") as g:
            g.write(f.read())
    return d


class System:
    """A timed row: fn(sample, gold_len) decodes one batch; ms and produced lengths are collected."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn
        self.ms = {}  # batch size -> list of per-sentence ms
        self.out_len = {}


def build_mist(args):
    """The MIST model the benchmark times: the preset with MiniLM weights (tiny in --quick)."""
    argv = [args.bin, "--task", "mist_nar", "--arch", args.mist_arch, "--criterion", "mist"]
    if args.quick:
        argv += ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
                 "--encoder-attention-heads", "4"]
    elif args.pretrained:
        argv += ["--pretrained-encoder", args.pretrained]
    return build(argv)


def load_mist(path, data_bin):
    from fairseq import checkpoint_utils

    models, _, mtask = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data_bin})
    return mtask, models[0].eval()


class NoCacheGenerator(MistGenerator):
    """The single pass without the source keys/values cache: every target pass is one full
    ``[CLS] X [SEP] Y`` forward that recomputes the source (what the cache saves; timed beside it)."""

    def predict_pass(self, model, state, tgt, src):
        logits = model.mlm_head(model.encoder.forward_full(model.add_cls(src), tgt)[:, -tgt.size(1):])
        real = tgt.ne(self.pad)
        return self.choose(logits, real, last_real(real))


def mode_systems(args, mist, d, label, checkpoint=None, ar_only=False):
    """Semi-NAR and AR rows of ``checkpoint`` (a model trained with the two-stream loss;
    default: the MIST model itself, which times the same computation). Pinned lengths: semi-NAR's
    length prediction is replaced, AR decodes exactly the batch's longest reference length."""
    model = load_mist(checkpoint, args.bin)[1] if checkpoint else mist

    def semi(block):
        gen = SemiNARGenerator(d, block_size=block)

        def fn(sample, gold_len):
            if args.pin_lengths:
                gen.predict_lengths = lambda m, state: gold_len.view(-1, 1)
            return gen.generate([model], sample)
        return fn

    def ar(beam, precision="fp32"):
        def fn(sample, gold_len):
            L = int(gold_len.max())
            pin = dict(max_len_a=0, max_len_b=L, min_length=L) if args.pin_lengths else {}
            return with_precision(ARGenerator(d, beam=beam, **pin), precision).generate([model], sample)
        return fn

    if ar_only:  # the label already says AR
        return [System(f"{label}, {name}{suffix(p)}", ar(beam, p)) for p in args.precisions
                for name, beam in (("greedy", 1), ("beam 4", 4))]
    return [System(f"{label} semi-NAR, blocks of 4", semi(4)), System(f"{label} semi-NAR, blocks of 2", semi(2)),
            System(f"{label} AR, greedy", ar(1)), System(f"{label} AR, beam 4", ar(4))]


def rescore_systems(args, mist, d, scorer):
    """Length beam K = 3, 5 with the NAR pass's own choice and rescored by the AR checkpoint in one
    teacher-forced pass (lengths predicted, never pinned: the candidates are the predicted lengths),
    in each of --precisions."""
    rows = []
    for p in args.precisions:
        for k in (3, 5):
            for name, rescorer in (("", None), (", AR-rescored", ARRescorer(scorer))):
                gen = with_precision(MistGenerator(d, length_beam=k, rescorer=rescorer), p)
                rows.append(System(f"MIST length beam {k}{name} (lengths predicted){suffix(p)}",
                                   lambda sample, gold_len, gen=gen: gen.generate([mist], sample)))
    return rows


def suffix(precision):
    """A row's name suffix for its --precisions entry (fp32 rows keep their plain names)."""
    return "" if precision == "fp32" else f", {precision}"


def ctc_systems(args, d):
    """Each --ctc-checkpoint: greedy, prefix beam 5, and (with --ar-checkpoint) prefix beam 5 rescored by
    the AR model, named by the checkpoint's slot ratio (and output shortlist), in each of --precisions;
    slots follow the source length, so nothing is pinned."""
    rescorer = ARRescorer(load_mist(args.ar_checkpoint, args.bin)[1]) if args.ar_checkpoint else None
    rows = []
    for path in args.ctc_checkpoint:
        model = load_mist(path, args.bin)[1]
        gens = [("", CTCGenerator(d)), (", prefix beam 5", CTCGenerator(d, beam=5))]
        if rescorer is not None:
            gens.append((", prefix beam 5, AR-rescored", CTCGenerator(d, beam=5, rescorer=rescorer)))
        shortlist = f", shortlist {model.shortlist_size}" if getattr(model, "shortlist_size", 0) else ""
        rows += [System(f"CTC single pass ({model.upsample_ratio:g} x source slots{shortlist}){name}{suffix(p)}",
                        lambda sample, gold_len, gen=with_precision(gen, p), model=model: gen.generate([model], sample))
                 for p in args.precisions for name, gen in gens]
    return rows


def make_systems(args, tmp):
    if args.mist_checkpoint:  # a trained model, built from its own configuration
        mtask, mist = load_mist(args.mist_checkpoint, args.bin)
    else:
        mtask, mist = build_mist(args)
    d = mtask.target_dictionary

    def pinned(gen, precision="fp32"):
        def fn(sample, gold_len):
            if args.pin_lengths:
                gen.predict_lengths = lambda model, state: gold_len.view(-1, 1)
            return with_precision(gen, precision).generate([mist], sample)
        return fn

    def floor(sample, gold_len):  # the model's own forward: source pass + target pass, no generator
        return mist(sample["net_input"]["src_tokens"], None, mist.masked_target(gold_len))[0]

    def fused(sample, gold_len):  # one pass over [CLS] X [SEP] [MASK]..: only possible if L is known
        src = sample["net_input"]["src_tokens"]
        h = mist.encoder.forward_full(mist.add_cls(src), mist.masked_target(gold_len))
        return mist.mlm_head(h[:, -int(gold_len.max()):])

    systems = [System(f"MIST single pass{suffix(p)}", pinned(MistGenerator(d), p)) for p in args.precisions] + [
        System("MIST single pass, no K/V cache", pinned(NoCacheGenerator(d))),
        System("MIST 3 iterations", pinned(MistGenerator(d, decode_iters=3))),
        System("Mask-Predict 3 iterations (MIST model)", pinned(MistGenerator(d, decode_iters=3, strategy="mask-predict"))),
        System("floor: one bare model forward", floor),
        System("fused single pass, gold length given", fused),
    ]

    systems += mode_systems(args, mist, d, "MIST", args.modes_checkpoint)
    if args.ctc_checkpoint:
        systems += ctc_systems(args, d)
    if args.ar_checkpoint:
        systems += mode_systems(args, mist, d, "same-encoder AR", args.ar_checkpoint, ar_only=True)
        systems += rescore_systems(args, mist, d, load_mist(args.ar_checkpoint, args.bin)[1])

    bdir = baseline_dir(args.bin, tmp)
    size = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
            "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128"] if args.quick else []
    common = [bdir, "--source-lang", "src", "--target-lang", "tgt", "--share-all-embeddings"] + size

    def to_fairseq(sample, fdict):
        src = sample["net_input"]["src_tokens"]
        pad = d.pad()
        ids = torch.where(src.eq(d.eos()), torch.full_like(src, fdict.eos()), src + fdict.nspecial)
        ids = ids.masked_fill(src.eq(pad), fdict.pad())
        return {"net_input": {"src_tokens": ids, "src_lengths": src.ne(pad).sum(1)}, "id": sample["id"]}

    def baseline(name, argv):
        """A trained baseline from RUNS/<name>/ (its own sizes), else an untrained one from argv."""
        if not args.baselines:
            return build(common + argv)
        from fairseq import checkpoint_utils

        path = os.path.join(args.baselines, name, args.baseline_checkpoint)
        if not os.path.exists(path):
            sys.exit(f"error: {path} not found: train it with examples/baselines/run_baselines.sh (SYSTEMS={name})")
        models, _, btask = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={"data": bdir, "source_lang": "src", "target_lang": "tgt"})
        return btask, models[0].eval()

    atask, ar = baseline("ar", ["--task", "translation", "--arch", "transformer"])
    fdict = atask.target_dictionary

    def ar_fn(beam):
        def fn(sample, gold_len):
            if args.pin_lengths:
                L = int(gold_len.max()) - 1  # + the EOS step = the reference length (which counts [SEP])
                lengths = dict(max_len_a=0, max_len_b=L, min_len=L)
            else:  # fairseq-generate's defaults
                lengths = dict(max_len_a=0, max_len_b=200, min_len=1)
            gen = SequenceGenerator([ar], fdict, beam_size=beam, len_penalty=1.0, **lengths)
            return gen.generate([ar], to_fairseq(sample, fdict))
        return fn

    systems.insert(0, System("AR transformer, beam 4", ar_fn(4)))
    systems.insert(1, System("AR transformer, greedy", ar_fn(1)))

    def nar(name, arch, max_iter, adaptive, extra=()):
        ntask, model = baseline(name, ["--task", "translation_lev", "--arch", arch, "--criterion", "nat_loss",
                                       "--noise", "full_mask", *extra])
        gen = IterativeRefinementGenerator(ntask.target_dictionary, max_iter=max_iter, adaptive=adaptive, beam_size=1)
        pin = {}
        if args.pin_lengths and hasattr(model.decoder, "forward_length_prediction"):
            orig = model.decoder.forward_length_prediction

            def fixed(length_out, encoder_out, tgt_tokens=None):
                orig(length_out, encoder_out, tgt_tokens)
                return pin["len"]

            model.decoder.forward_length_prediction = fixed

        def fn(sample, gold_len):
            pin["len"] = gold_len + 1  # Fairseq NAR targets hold <s> ... </s>; ours end in [SEP]
            return gen.generate([model], to_fairseq(sample, ntask.target_dictionary))
        return fn

    systems.append(System("NAT (single pass)", nar("nat", "nonautoregressive_transformer", 0, False,
                                                   ["--pred-length-offset", "--length-loss-factor", "0.1"])))
    systems.append(System("CMLM, 10 iterations", nar("cmlm", "cmlm_transformer", 9, False)))
    levt = "LevT (up to 10 iterations" + (", length not pinned)" if args.pin_lengths else ")")
    systems.append(System(levt, nar("levt", "levenshtein_transformer", 9, True)))
    return mtask, systems

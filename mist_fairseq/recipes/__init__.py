"""Training recipes, each written once as a Hydra config (``NAME.yaml`` in this folder, ``# @package
_global_``) and read by every path that trains: the configs of ``examples/hydra`` list them in their
defaults (``python -m mist_fairseq.hydra_train``); ``examples/common.sh``, ``benchmarks.train_step``
and the quickstart turn them into ``fairseq-train`` flags (:func:`flags`).

    python -m mist_fairseq.recipes plugin optimization.lr=[0.0003] lr_scheduler.warmup_updates=100 [--fast-path]

prints the recipe's ``fairseq-train`` flags, one per line. Recipes: ``plugin`` (this plugin's CPU
recipe), ``authors`` (kongds/MIST's); ``fast_path.yaml`` puts either on the CPU fast path.
"""

import os
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = ("plugin", "authors")  # fast_path.yaml goes on top of either
# a section's _name -> the fairseq-train flag that chooses it
NAME_FLAGS = {"task": "--task", "criterion": "--criterion", "optimizer": "--optimizer",
              "lr_scheduler": "--lr-scheduler", "model": "--arch"}


def load(name: str, overrides: Sequence[str] = (), fast_path: bool = False) -> Dict:
    """The recipe ``name`` (then ``fast_path.yaml`` if ``fast_path``, then ``overrides``, each
    ``section.key=value`` with a YAML value) -> a plain dict {section: {key: value}}."""
    from omegaconf import OmegaConf

    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    parts = [OmegaConf.load(os.path.join(HERE, f"{name}.yaml"))]
    if fast_path:
        parts.append(OmegaConf.load(os.path.join(HERE, "fast_path.yaml")))
    bad = [o for o in overrides if "=" not in o or "." not in o.split("=", 1)[0]]
    if bad:
        raise ValueError(f"override {bad[0]!r} is not section.key=value")
    parts.append(OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_container(OmegaConf.merge(*parts), resolve=True)


def to_flags(cfg: Dict) -> List[str]:
    """{section: {key: value}} -> fairseq-train flags. ``_name`` chooses the section's registry entry
    (``model._name`` the --arch); true booleans become bare flags and false ones are left out (every
    boolean of these recipes defaults to false); lists are comma-joined (``optimization.lr``);
    ``task.data`` and the ``hydra`` section are not flags."""
    out = []
    for section, values in cfg.items():
        if section == "hydra" or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if section == "task" and key == "data" or value is None or value is False:
                continue
            flag = NAME_FLAGS[section] if key == "_name" else "--" + key.replace("_", "-")
            if value is True:
                out.append(flag)
            elif isinstance(value, (list, tuple)):
                out += [flag, ",".join(str(v) for v in value)]
            else:
                out += [flag, str(value)]
    return out


def flags(name: str, overrides: Sequence[str] = (), fast_path: bool = False) -> List[str]:
    """The recipe ``name``'s fairseq-train flags (see :func:`load`)."""
    return to_flags(load(name, overrides, fast_path))

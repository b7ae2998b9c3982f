"""The recipes (mist_fairseq/recipes/*.yaml) and the Hydra configs (examples/hydra/*.yaml) that list them:
each config composes to the same Fairseq config as the fairseq-train command the example scripts run
(recipe flags from examples/common.sh, which reads the same YAML), and python -m mist_fairseq.hydra_train
trains with the plugin's dataclass defaults merged in."""

import os
import shlex
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, run_cli

CONFIG_DIR = f"{REPO}/examples/hydra"
# config -> (examples/common.sh RECIPE, LR, WARMUP, the rest of its script's fairseq-train command)
SCRIPTS = {
    "quora_mist": ("plugin", "5e-4", "500", "--mix-mode dynamic --batch-size 64 --max-update 20000 "
                   "--save-interval-updates 1000 --keep-interval-updates 2 --validate-interval-updates 1000"),
    "quora_authors": ("authors", "3e-5", "500", "--mix-mode dynamic --batch-size 64 --max-update 20000 "
                      "--save-interval-updates 1000 --keep-interval-updates 2 --validate-interval-updates 1000"),
    "quora_ar_teacher": ("plugin", "5e-4", "100", "--mix-mode none --nar-loss-factor 0 --block-loss-factor 1 "
                         "--block-sizes 1 --batch-size 32 --max-update 100000 --stop-time-hours 1 "
                         "--save-interval-updates 500 --keep-interval-updates -1 --disable-validation"),
    "quora_kd_student": ("plugin", "5e-4", "100", "--ctc --mix-mode none --batch-size 32 --max-update 100000 "
                         "--stop-time-hours 1 --save-interval-updates 500 --keep-interval-updates -1 "
                         "--disable-validation"),
}
COMPARED = {"optimizer", "lr_scheduler", "criterion", "model", "optimization", "dataset", "checkpoint", "common"}


def script_recipe(recipe, lr, warmup, updates=20000):
    script = (f"source {shlex.quote(REPO)}/examples/common.sh; LR={lr} WARMUP={warmup} UPDATES={updates} "
              f'RECIPE={recipe} recipe_args; printf "%s\\n" "${{RECIPE_ARGS[@]}}"')
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()


def composed(name):
    """examples/hydra/NAME.yaml as fairseq-hydra-train composes it (registry defaults added)."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import mist_fairseq  # noqa: F401

    GlobalHydra.instance().clear()
    hydra_init(name)
    # version_base 1.1, as fairseq-hydra-train runs Hydra (a newer base breaks fairseq's own compose)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.1"):
        cfg = compose(config_name=name, overrides=["task.data=DATA"])
    GlobalHydra.instance().clear()
    add_defaults(cfg)
    return cfg


def from_cli(argv):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # fairseq initialises Hydra itself here
    parser = options.get_training_parser()
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))


def leaves(node, prefix=""):
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else node
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_hydra_config_equals_the_scripts_command(name):
    recipe, lr, warmup, rest = SCRIPTS[name]
    yml = composed(name)
    argv = (["DATA", "--user-dir", f"{REPO}/mist_fairseq", "--task", "mist_nar", "--arch", "mist_minilm_l6",
             "--criterion", "mist", "--pretrained-encoder", "minilm", "--no-epoch-checkpoints", "--log-format",
             "simple", "--log-interval", "50", "--num-workers", "0", "--seed", "1",
             "--save-dir", yml.checkpoint.save_dir] + script_recipe(recipe, lr, warmup) + rest.split())
    cli = from_cli(argv)
    differ = {}
    for section in COMPARED:
        a, b = leaves(yml[section]), leaves(cli[section])
        for key in set(a) | set(b):
            if (section, key) in (("model", "_name"), ("common", "user_dir")):
                # mist_nar (its defaults are the mist_minilm_l6 sizes) vs the preset's name; the launcher
                # (mist_fairseq.hydra_train) adds common.user_dir
                continue
            if a.get(key) != b.get(key):
                differ[f"{section}.{key}"] = (a.get(key), b.get(key))
    assert not differ, f"YAML vs the script's command line: {differ}"


def test_every_config_is_checked_and_lists_a_recipe():
    names = {f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml")}
    assert names == set(SCRIPTS), "a config without its script command here"
    for name in names:
        defaults = yaml.safe_load(open(f"{CONFIG_DIR}/{name}.yaml"))["defaults"]
        assert defaults[0] == "_self_" and defaults[1] in ("plugin", "authors"), name


def test_recipe_flags_follow_the_yaml(tmp_path, monkeypatch):
    """The flags come from the YAML file: an edited recipe changes them (nothing else holds a copy)."""
    from mist_fairseq import recipes

    flags = recipes.flags("plugin", ["optimization.lr=[0.0003]"], fast_path=True)
    pairs = dict(zip(flags, flags[1:]))
    assert float(pairs["--lr"]) == 3e-4 and pairs["--optimizer"] == "fused_adamw" and "--cpu-fast-path" in flags
    assert "--tie-output-embeddings" in flags and float(pairs["--length-loss-factor"]) == 0.1
    for name in ("plugin.yaml", "fast_path.yaml"):
        (tmp_path / name).write_text(open(os.path.join(recipes.HERE, name)).read())
    (tmp_path / "plugin.yaml").write_text((tmp_path / "plugin.yaml").read_text().replace("glat_hamming: first",
                                                                                        "glat_hamming: mixed"))
    monkeypatch.setattr(recipes, "HERE", str(tmp_path))
    edited = recipes.flags("plugin")
    assert edited[edited.index("--glat-hamming") + 1] == "mixed"
    with pytest.raises(ValueError, match="section.key=value"):
        recipes.flags("plugin", ["lr=1"])


def test_hydra_train_runs_the_recipe_with_the_plugin_defaults(data, tmp_path):
    ck = tmp_path / "ck"
    run_cli([sys.executable, "-m", "mist_fairseq.hydra_train", "--config-dir", CONFIG_DIR, "--config-name",
             "quora_mist", f"task.data={data / 'bin'}", "model.pretrained_encoder=null", "+model.encoder_layers=2",
             "+model.encoder_embed_dim=32", "+model.encoder_attention_heads=2", "+model.encoder_ffn_embed_dim=64",
             "model.cpu_fast_path=false", "optimizer._name=adam", "optimization.max_update=2",
             "dataset.batch_size=8", "dataset.disable_validation=true", "criterion.mix_mode=none", "+model.ctc=true",
             f"checkpoint.save_dir={ck}"], cwd=tmp_path)
    cfg = torch.load(ck / "checkpoint_last.pt", weights_only=False)["cfg"]
    assert cfg["task"]["_name"] == "mist_nar" and cfg["criterion"]["_name"] == "mist"
    # the recipe's values (mist_fairseq/recipes/plugin.yaml) and the overrides ...
    assert cfg["criterion"]["glat_hamming"] == "first" and cfg["criterion"]["mix_mode"] == "none"
    assert cfg["optimization"]["clip_norm"] == 1.0 and cfg["model"]["tie_output_embeddings"] is True
    assert cfg["model"]["ctc"] is True and cfg["model"]["encoder_layers"] == 2
    # ... and what only the plugin's dataclasses know (merged because the launcher registered them first)
    assert cfg["criterion"]["label_smoothing"] == 0.1 and cfg["model"]["upsample_ratio"] == 2.0
    assert cfg["task"]["max_target_positions"] == 48 and cfg["common"]["user_dir"].endswith("mist_fairseq")
    assert not (tmp_path / "outputs").exists()  # hydra.run.dir: no dated output folder


def test_readme_train_command_is_the_hydra_config():
    """README's fairseq-train command trains what examples/hydra/quora_mist.yaml does."""
    readme = open(f"{REPO}/README.md").read()
    start = readme.index("fairseq-train data/quora/bin --user-dir mist_fairseq --task mist_nar --arch mist_minilm_l6")
    command = readme[start: readme.index("```", start)].replace("\\\n", " ")
    argv = shlex.split(command)[1:]
    argv[argv.index("--user-dir") + 1] = f"{REPO}/mist_fairseq"
    cli, yml = from_cli(argv), composed("quora_mist")
    for section in ("optimizer", "lr_scheduler", "criterion", "model", "optimization"):
        a, b = leaves(yml[section]), leaves(cli[section])
        differ = {k: (a.get(k), b.get(k)) for k in set(a) | set(b)
                  if a.get(k) != b.get(k) and (section, k) != ("model", "_name")}
        assert not differ, f"{section}: {differ}"

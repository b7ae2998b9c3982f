"""``fairseq-hydra-train`` with this plugin registered first.

Fairseq's Hydra entry point merges each registry entry's dataclass defaults (``task._name: mist_nar``)
while it composes the config, before it reads ``common.user_dir``; run through ``fairseq-hydra-train``,
a config naming this plugin's task, model or criterion therefore loses their defaults. This launcher
imports the plugin, adds ``common.user_dir`` (so spawned distributed workers import it too) unless
given, and hands over to Fairseq's own ``hydra_train``:

    python -m mist_fairseq.hydra_train --config-dir examples/hydra --config-name quora_mist task.data=DATA/bin
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> None:
    import mist_fairseq  # noqa: F401  (registers mist_nar, mist, fused_adamw before Hydra composes)
    from fairseq_cli.hydra_train import cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("common.user_dir=") for a in argv):
        argv.append(f"common.user_dir={HERE}")
    sys.argv = [sys.argv[0]] + argv
    cli_main()


if __name__ == "__main__":
    main()

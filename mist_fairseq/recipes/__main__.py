"""python -m mist_fairseq.recipes NAME [section.key=value ...]: the recipe's fairseq-train flags, one a line."""

import argparse

from mist_fairseq.recipes import RECIPES, flags


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m mist_fairseq.recipes", description=__doc__)
    p.add_argument("name", choices=RECIPES, help="the recipe (mist_fairseq/recipes/NAME.yaml)")
    p.add_argument("overrides", nargs="*", help="section.key=value (a YAML value), e.g. optimization.lr=[0.0003]")
    p.add_argument("--fast-path", action="store_true", help="on the CPU fast path (bf16 products, fused AdamW)")
    args = p.parse_args(argv)
    try:
        lines = flags(args.name, args.overrides, fast_path=args.fast_path)
    except ValueError as e:
        p.error(str(e))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Experiment specs (examples/specs/NAME.yaml): each row's training options and label, declared once and
read by the experiment's script and by its collector.

    python examples/spec.py NAME row ROW      # MODE= RECIPE= FAST_PATH= FLAGS= (for eval in bash)
    python examples/spec.py NAME rows [--table]  # the row names in order (--table: the table's rows only)
    python examples/spec.py NAME pairs KEY    # the pairs under KEY, one "a b" per line
"""

import argparse
import os
import shlex
import sys
from typing import Dict, List, Tuple

SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
FIELDS = ("mode", "recipe", "fast_path", "flags", "label")


def load(name: str) -> Dict:
    """The spec NAME, every row checked for the fields the script and the collector read."""
    import yaml

    path = os.path.join(SPECS, f"{name}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"no spec {path}; the specs are {', '.join(sorted(os.listdir(SPECS)))}")
    with open(path) as f:
        spec = yaml.safe_load(f)
    for row, fields in spec["rows"].items():
        missing = [k for k in FIELDS if k not in fields]
        if missing:
            raise ValueError(f"{path}: row {row} lacks {', '.join(missing)}")
    for key, pairs in spec.get("pairs", {}).items():
        for a, b in (p.split() for p in pairs):
            if a not in spec["rows"] or b not in spec["rows"]:
                raise ValueError(f"{path}: pair {a} {b} under {key} names a row the spec does not have")
    return spec


def rows(spec: Dict, table: bool = False) -> List[str]:
    return [r for r, f in spec["rows"].items() if not table or f.get("table", True)]


def labels(spec: Dict) -> List[Tuple[str, str]]:
    """(row, label) of the table's rows, in order."""
    return [(r, spec["rows"][r]["label"]) for r in rows(spec, table=True)]


def pairs(spec: Dict, key: str) -> List[Tuple[str, str]]:
    return [tuple(p.split()) for p in spec.get("pairs", {}).get(key, [])]


def shell_row(spec: Dict, row: str) -> str:
    """Bash assignments of one row's options."""
    if row not in spec["rows"]:
        raise ValueError(f"no row {row}; rows: {' '.join(rows(spec))}")
    f = spec["rows"][row]
    values = {"MODE": f["mode"], "RECIPE": f["recipe"], "FAST_PATH": int(f["fast_path"]),
              "FLAGS": f["flags"] or ""}
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("what", choices=["row", "rows", "pairs"])
    p.add_argument("arg", nargs="?")
    p.add_argument("--table", action="store_true", help="rows: the table's rows only")
    args = p.parse_args(argv)
    try:
        spec = load(args.name)
        if args.what == "row":
            print(shell_row(spec, args.arg))
        elif args.what == "rows":
            print(" ".join(rows(spec, args.table)))
        else:
            print("\n".join(" ".join(pair) for pair in pairs(spec, args.arg)))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

"""Experiment specs (examples/specs/NAME.yaml): each row's training options and label, and the test
decodings of every row, declared once and read by the experiment's script and by its collector.

    python examples/spec.py NAME row ROW         # MODE= ... FLAGS= DATA_KIND= RUN_NAME= BY= GEN= (for eval in bash)
    python examples/spec.py NAME rows [--table]  # the row names in order (--table: the table's rows only)
    python examples/spec.py NAME runs [--own]    # their run folders' names (--own: rows no other step trains)
    python examples/spec.py NAME pairs KEY       # the pairs under KEY, one "a b" per line
    python examples/spec.py NAME decodings       # NAME:ARGS per decoding, for common.sh's decode_modes
    python examples/spec.py NAME modes [RUN]     # the runs with decoding modes, or RUN's as NAME:ARGS

A row needs mode and label; recipe (plugin), fast_path (1), flags (none), data (raw), run (the row's
name) have defaults; by: the script and step that train it instead ("quora_table.sh none"); gen:
fairseq-generate options of its dev selection and test decode; table: false keeps it out of the table.
``decodings`` (optional): name -> args, label, bench; ``other_rows``: the collector's rows from other
experiments' runs, [label, run, output, benchmark row]; ``reference``: the label of the table row every
other row is compared with; ``modes``: run -> {name: args}, decodings of one run (``modes_table`` and
``modes_reference``: the rows and reference of their table, given explicitly).
"""

import argparse
import os
import shlex
import sys
from typing import Dict, List, Tuple

SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
FIELDS = ("mode", "label")
DEFAULTS = {"recipe": "plugin", "fast_path": 1, "flags": "", "data": "raw"}
DECODING_FIELDS = ("args", "label", "bench")
KNOWN = set(FIELDS) | set(DEFAULTS) | {"run", "bench", "by", "gen", "table"}


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
        unknown = [str(k) for k in fields if k not in KNOWN]
        if unknown:  # most often an unquoted comma inside {...} splitting a value
            raise ValueError(f"{path}: row {row} has unknown fields {', '.join(unknown)} (quote values that hold "
                             f"commas; fields: {', '.join(sorted(KNOWN))})")
    for name, fields in spec.get("decodings", {}).items():
        missing = [k for k in DECODING_FIELDS if k not in fields]
        if missing:
            raise ValueError(f"{path}: decoding {name} lacks {', '.join(missing)}")
    for key, pairs in spec.get("pairs", {}).items():
        for a, b in (p.split() for p in pairs):
            if a not in spec["rows"] or b not in spec["rows"]:
                raise ValueError(f"{path}: pair {a} {b} under {key} names a row the spec does not have")
    return spec


def field(spec: Dict, row: str, name: str):
    """A row's field, its default where the row does not set it (run: the row's name)."""
    return spec["rows"][row].get(name, row if name == "run" else DEFAULTS.get(name))


def rows(spec: Dict, table: bool = False) -> List[str]:
    return [r for r, f in spec["rows"].items() if not table or f.get("table", True)]


def labels(spec: Dict) -> List[Tuple[str, str]]:
    """(row, label) of the table's rows, in order."""
    return [(r, spec["rows"][r]["label"]) for r in rows(spec, table=True)]


def pairs(spec: Dict, key: str) -> List[Tuple[str, str]]:
    return [tuple(p.split()) for p in spec.get("pairs", {}).get(key, [])]


def decodings(spec: Dict) -> List[str]:
    """NAME:ARGS of each decoding (common.sh's decode_modes takes them so)."""
    return [f"{name}:{d['args']}" for name, d in spec.get("decodings", {}).items()]


def table_rows(spec: Dict) -> List[Tuple[str, str, str, str]]:
    """The collector's rows: (label, run, test output in ROOT/quora_RUN, benchmark row), other_rows first,
    then each table row with its first decoding (generate-test.txt) and every decoding (modes/NAME.txt)."""
    out = [tuple(r) for r in spec.get("other_rows", [])]
    for row in rows(spec, table=True):
        label, run, bench = field(spec, row, "label"), field(spec, row, "run"), field(spec, row, "bench")
        out.append((f"{label}: {spec['first_decoding']}", run, "generate-test.txt", bench))
        for name, d in spec.get("decodings", {}).items():
            out.append((f"{label}: {d['label']}", run, f"modes/{name}.txt", d["bench"].format(bench=bench)))
    return out


def modes(spec: Dict, run: str = None) -> List[str]:
    """The runs with a ``modes`` entry, or run's decodings as NAME:ARGS (common.sh's decode_modes)."""
    table = spec.get("modes", {})
    if run is None:
        return list(table)
    if run not in table:
        raise ValueError(f"no modes for run {run}; runs: {' '.join(table)}")
    return [f"{name}:{args}" for name, args in table[run].items()]


def reference(spec: Dict, rows=None, key: str = "reference") -> Tuple[str, str, str]:
    """(label, run, test output) of the row named by spec[key] that every other row is compared with;
    rows: the table's (label, run, output, bench) rows (default: :func:`table_rows`)."""
    for label, run, output, _ in table_rows(spec) if rows is None else rows:
        if label == spec[key]:
            return label, run, output
    raise ValueError(f"{key} {spec[key]!r} is not a row of the table")


def shell_row(spec: Dict, row: str) -> str:
    """Bash assignments of one row's options."""
    if row not in spec["rows"]:
        raise ValueError(f"no row {row}; rows: {' '.join(rows(spec))}")
    values = {"MODE": field(spec, row, "mode"), "RECIPE": field(spec, row, "recipe"),
              "FAST_PATH": int(field(spec, row, "fast_path")), "FLAGS": field(spec, row, "flags") or "",
              "DATA_KIND": field(spec, row, "data"), "RUN_NAME": field(spec, row, "run"),
              "BY": spec["rows"][row].get("by", ""), "GEN": spec["rows"][row].get("gen", "")}
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("what", choices=["row", "rows", "runs", "pairs", "decodings", "modes"])
    p.add_argument("arg", nargs="?")
    p.add_argument("--table", action="store_true", help="rows: the table's rows only")
    p.add_argument("--own", action="store_true", help="runs: only rows that no other script step trains")
    args = p.parse_args(argv)
    try:
        spec = load(args.name)
        if args.what == "row":
            print(shell_row(spec, args.arg))
        elif args.what == "rows":
            print(" ".join(rows(spec, args.table)))
        elif args.what == "runs":
            print(" ".join(field(spec, r, "run") for r in rows(spec) if not (args.own and "by" in spec["rows"][r])))
        elif args.what == "decodings":
            print("\n".join(decodings(spec)))
        elif args.what == "modes":
            print(("\n" if args.arg else " ").join(modes(spec, args.arg)))
        else:
            print("\n".join(" ".join(pair) for pair in pairs(spec, args.arg)))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()

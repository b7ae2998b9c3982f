"""The quickstart's progress display: parsed from fairseq-train's own log lines, shown on the terminal."""

import sys

import pytest

from mist_fairseq.quickstart import progress_line, run_with_progress

LINE = ("2026-11-25 10:24:42 | INFO | train_inner | epoch 001:     10 / 766 loss=30.02, nll_loss=29.22, "
        "ups=0.15, wpb=986, bsz=64, num_updates={n}, lr=3e-05, gnorm=47.934, train_wall=64, wall=65")


def test_progress_line_reads_updates_loss_speed_and_time_left():
    shown = progress_line(LINE.format(n=40), total=400, elapsed=100.0)
    assert shown.split() == ["update", "40/400", "|", "loss", "30.02", "|", "0.40", "updates/s", "|", "15:00", "left"]
    # a resumed run counts its own updates only: 40 - 20 in 100 s
    assert "0.20 updates/s" in progress_line(LINE.format(n=40), 400, 100.0, start_update=20)
    assert progress_line("2026-11-25 | INFO | fairseq_cli.train | model mist_nar", 400, 1.0) is None


def test_run_with_progress_prints_while_training_and_keeps_the_log(tmp_path, capsys):
    script = ("import time\n"
              "print('Loaded checkpoint x/checkpoint_last.pt (epoch 1 @ 10 updates)', flush=True)\n"
              + "".join(f"print({LINE.format(n=n)!r}, flush=True)\n" for n in (20, 30)))
    log = tmp_path / "train.log"
    run_with_progress([sys.executable, "-c", script], str(log), total=30)
    out = capsys.readouterr().out
    assert "resumed at update 10" in out
    assert "update   20/30" in out and "update   30/30" in out and "0:00 left" in out
    assert log.read_text().count("num_updates=") == 2  # everything fairseq printed is in the log
    with pytest.raises(SystemExit, match="see"):
        run_with_progress([sys.executable, "-c", "raise SystemExit(3)"], str(log), total=1)


def test_progress_line_with_a_time_budget():
    # 40 updates in 100 s of a 300 s budget: 200 s left of the budget (the 600-update cap is further)
    shown = progress_line(LINE.format(n=40), total=600, elapsed=100.0, budget_s=300.0)
    assert shown.endswith("| 3:20 left of a 5:00 budget")
    # the update cap comes first: 590 of 600 at 0.4 updates/s is 25 s away
    assert progress_line(LINE.format(n=590), 600, 1475.0, budget_s=3000.0).endswith("0:25 left of a 50:00 budget")


def test_training_is_budgeted_by_time_and_trains_the_chosen_targets():
    from mist_fairseq.quickstart import DATA, parse_args, train_command

    cmd = train_command(parse_args(["--ctc", "off"]), "BIN", "CK", budget_s=360.0)
    assert cmd[cmd.index("--stop-time-hours") + 1] == "0.10000"
    # the cap is far: on 2 cores the time budget ends training
    assert cmd[cmd.index("--mix-mode") + 1] == "none" and cmd[cmd.index("--max-update") + 1] == "5000"
    assert "--stop-time-hours" not in train_command(parse_args(["--budget-minutes", "0", "--ctc", "off"]), "BIN",
                                                    "CK", None)
    mist = train_command(parse_args(["--mix-mode", "dynamic"]), "BIN", "CK", 10.0)
    assert mist[mist.index("--mix-mode") + 1] == "dynamic"
    assert "--ctc" in train_command(parse_args(["--ctc"]), "BIN", "CK", None) and "--ctc" not in cmd
    assert "--ctc" in train_command(parse_args(["--ctc", "on"]), "BIN", "CK", None)
    copy = train_command(parse_args(["--target-input", "copy"]), "BIN", "CK", None)
    assert copy[copy.index("--target-input") + 1] == "copy" and cmd[cmd.index("--target-input") + 1] == "mask"
    # the plugin recipe (mist_fairseq/recipes/plugin.yaml) at the quickstart's lr and warm-up
    from mist_fairseq.recipes import flags
    recipe = flags("plugin", ["optimization.lr=[0.0005]", "lr_scheduler.warmup_updates=60"], fast_path=True)
    assert cmd[-len(recipe):] == recipe and float(cmd[cmd.index("--lr") + 1]) == 5e-4
    assert cmd[cmd.index("--glat-hamming") + 1] == "first" and "--tie-output-embeddings" in cmd
    assert "--cpu-fast-path" not in train_command(parse_args(["--no-fast-path"]), "BIN", "CK", None)
    # the output shortlist: on by default, off with 0
    assert cmd[cmd.index("--output-shortlist") + 1] == "2000"
    assert "--output-shortlist" not in train_command(parse_args(["--output-shortlist", "0"]), "BIN", "CK", None)
    more = train_command(parse_args(["--train-args", "--dropout 0 --label-smoothing 0", "--ctc", "off"]), "BIN",
                         "CK", None)
    assert more[-4:] == ["--dropout", "0", "--label-smoothing", "0"] and more[:-4] == train_command(
        parse_args(["--budget-minutes", "0", "--ctc", "off"]), "BIN", "CK", None)
    # the shipped distilled targets: one non-empty line per train source, not the references
    kd = open(f"{DATA}/train.kd.tgt", encoding="utf-8").read().splitlines()
    src = open(f"{DATA}/train.src", encoding="utf-8").read().splitlines()
    ref = open(f"{DATA}/train.tgt", encoding="utf-8").read().splitlines()
    assert len(kd) == len(src) == 3000 and all(k.strip() for k in kd)
    assert sum(k != r.lower() for k, r in zip(kd, ref)) > 1500


def test_ctc_auto_takes_ctc_only_with_amx_units_and_the_fast_path(monkeypatch):
    """--ctc auto: CTC where ten minutes buy enough CTC updates (AMX units, fast path on), else the
    length head; 'on' / 'off' / --ctc alone decide regardless of the machine."""
    from mist_fairseq import quickstart

    assert quickstart.resolve_ctc("auto", True, amx=True) is True
    assert quickstart.resolve_ctc("auto", True, amx=False) is False
    assert quickstart.resolve_ctc("auto", False, amx=True) is False  # --no-fast-path trains fp32
    assert quickstart.resolve_ctc("on", False, amx=False) is True and quickstart.resolve_ctc("off", True, amx=True) is False
    for amx in (True, False):
        monkeypatch.setattr(quickstart, "amx_supported", lambda amx=amx: amx)
        args = quickstart.parse_args([])
        assert args.ctc_choice == "auto" and args.ctc is amx
        cmd = quickstart.train_command(args, "BIN", "CK", None)
        assert ("--ctc" in cmd) is amx
    assert quickstart.parse_args(["--ctc"]).ctc is True and quickstart.parse_args(["--ctc", "off"]).ctc is False


def test_missing_distilled_targets_name_the_fix(tmp_path, monkeypatch):
    from mist_fairseq import quickstart

    monkeypatch.setattr(quickstart, "DATA", str(tmp_path))
    with pytest.raises(SystemExit, match="examples/quickstart_kd.sh or pass --targets raw"):
        quickstart.main(["--workdir", str(tmp_path / "w")])

"""docs/OPTIONS.md is generated from the plugin's dataclasses and must match them."""
import dataclasses
import os

from mist_fairseq import options_doc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "OPTIONS.md")


def test_options_md_is_current():
    with open(DOC, encoding="utf-8") as fh:
        assert fh.read() == options_doc.render(), "run: python -m mist_fairseq.options_doc --out docs/OPTIONS.md"


def test_every_own_field_is_listed_with_its_default():
    text = options_doc.render()
    for _, _, cls in options_doc.SECTIONS:
        fields = options_doc.own_fields(cls)
        assert fields, cls
        for f in fields:
            row = next(l for l in text.splitlines() if l.startswith(f"| `--{f.name.replace('_', '-')}` |"))
            assert options_doc.default_text(f) in row
    # interpolated mirrors and inherited Fairseq options stay out
    assert "`--max-positions`" in text and "`--batch-size`" not in text
    assert "max_source_positions" in {f.name for f in dataclasses.fields(options_doc.MistNARConfig)}
    assert text.count("`--max-source-positions`") == 1  # the task's, not the model's II mirror


def test_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "OPTIONS.md"
    stale.write_text(options_doc.render().replace("`--length-beam`", "`--old-name`"))
    assert options_doc.main(["--check", str(stale)]) == 1
    assert options_doc.main(["--out", str(stale)]) == 0
    assert options_doc.main(["--check", str(stale)]) == 0

"""The README's figures table is made from the generated benchmark pages only."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from figures import BEGIN, END, RunInfo, headline, update_readme  # noqa: E402

INFO = RunInfo(command="python benchmarks/x.py --write-docs", commit="abc123def456",
               changes=(), date=dt.datetime(2026, 1, 2, 3, 4).strftime("%Y-%m-%d %H:%M UTC"),
               cores=2, cpu="cpu", python="3.11", system="Linux")


def _page(title: str, rows: list[tuple[str, str]]) -> str:
    return INFO.header(title) + headline(rows) + "\n## Other\n\n| a | b |\n|---|---|\n| x | y |\n"


def test_the_readme_block_is_rebuilt_from_the_pages(tmp_path: Path) -> None:
    figs = tmp_path / "figures"
    figs.mkdir()
    (figs / "accuracy.md").write_text(_page("Accuracy", [("standard: side right", "97.0% (9/9)"),
                                                         ("a | b", "0.1 / 0.2 mm")]))
    (figs / "speed.md").write_text(_page("Speed", [("speed, 1080p30", "2.10x real time")]))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{BEGIN}\n| old | table |\n{END}\nafter\n")
    assert update_readme(readme, figs)
    text = readme.read_text()
    assert "old" not in text and text.startswith("# x\n\nbefore\n") and text.endswith("after\n")
    block = text[text.index(BEGIN):text.index(END)]
    # Every headline row, in page order, each naming its page, commit and date; no row
    # from the pages' other sections.
    rows = [ln for ln in block.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert rows == ["| standard: side right | 97.0% (9/9) |", "| a \\| b | 0.1 / 0.2 mm |",
                    "| speed, 1080p30 | 2.10x real time |"]
    # Under the table, each page with the commit and date its figures come from.
    assert ("From [accuracy](docs/figures/accuracy.md) (abc123def456, 2026-01-02 03:04 UTC); "
            "[speed](docs/figures/speed.md) (abc123def456, 2026-01-02 03:04 UTC).") in block
    assert "| x | y |" not in block


def test_a_readme_without_the_block_is_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    assert not update_readme(readme, tmp_path)
    assert readme.read_text() == "# x\n"

"""What the session report and the comparison report share: the house style and
atomic folder writing (standard library only, so the clinic commands stay fast)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NEAR_NOTE = ' <span class="note">near threshold</span>'
"""Beside a dominant-side badge whose call is near its threshold
(:func:`movement.analysis.dominance.near_threshold`), in both reports."""

BASE_CSS = """
*{box-sizing:border-box;-webkit-print-color-adjust:exact;print-color-adjust:exact}
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2733;background:#eef1f4;font-size:14px;line-height:1.4}
header{background:#16324f;color:#fff;padding:14px 32px 10px}
header h1{margin:0;font-size:20px;font-weight:600;letter-spacing:.2px}
.pbar{display:flex;flex-wrap:wrap;gap:6px 28px;margin-top:8px;font-size:13px}
.pbar div{display:flex;flex-direction:column}
.pbar b{font-size:10px;text-transform:uppercase;letter-spacing:.6px;opacity:.7;font-weight:600}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #dde3e8;border-radius:6px;padding:14px 20px;margin:14px 0}
h2{font-size:17px;margin:0 0 10px;color:#16324f;border-bottom:2px solid #e3e8ee;padding-bottom:6px}
h3{font-size:15px;margin:4px 0 6px;color:#16324f}
table{border-collapse:collapse;font-size:13px;width:100%;margin:4px 0 8px}
th,td{padding:4px 8px;border-bottom:1px solid #e3e7eb;text-align:right;vertical-align:middle}
th{background:#eef2f6;font-weight:600;font-size:12px;color:#334}
.dom-right{color:#fff;background:#1f6fb4}.dom-left{color:#fff;background:#d9541e}
.dom-balanced{color:#2d5e2d;background:#dcefdc}.dom-undetermined{color:#555;background:#e6e6e6}
"""
"""Layout, type and colours common to every page movement writes (patient's right
blue, left orange, balanced green)."""


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing what is there.

    The old folder is renamed aside first and removed only once the new one is
    in place; if the second rename fails the old one is put back, so ``out``
    always holds a complete folder.
    """
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


@contextmanager
def staged_folder(out: Path, error: type[Exception], mode: int = 0o755) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write into; renamed to ``out`` when the block ends.

    On any failure, or an interruption, the temporary folder is removed and
    ``out`` is untouched; OS errors become one ``error`` with the path.
    """
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise error(f"{out.parent}: cannot write ({exc.strerror or exc})") from None
    try:
        yield tmp
        os.chmod(tmp, mode)
        replace_folder(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise error(f"{out}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

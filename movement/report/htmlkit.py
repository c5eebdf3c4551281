"""What the session report and the comparison report share: the page templates and
atomic folder writing.

The pages are rendered from the Jinja2 templates in ``movement/report/templates``
(``base.html`` holds the house style and the page frame; ``report.html`` and
``comparison.html`` extend it; ``macros.html`` holds the tables and badges both
use). The Python side prepares records; the templates hold every tag.

Autoescape is on: every value from the session or the store (patient IDs,
labels, notes, reasons) is escaped unless the page marks it ``|safe`` (only
plotly's figure fragments, plotly.js and the frame viewer's JSON). Values are
escaped like the standard library's :func:`html.escape` (``'`` as ``&#x27;``),
so a page reads the same whichever way it was written.
"""

from __future__ import annotations

import functools
import html
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("templates")
"""The templates ship inside the package (the wheel includes every file under
``movement/``), so an installed ``movement`` renders the same pages."""


def _escape(value: object) -> object:
    """Escape one template value as :func:`html.escape` does (``&#x27;`` for ``'``)."""
    from markupsafe import Markup

    if hasattr(value, "__html__"):  # already markup: a macro's output or |safe
        return value
    return Markup(html.escape(str(value)))


@functools.cache
def environment() -> Any:
    """The Jinja2 environment of movement's pages (built once; jinja2 imported lazily,
    so commands that never write a page do not pay for it)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        # finalize runs before autoescape: values arrive already escaped as Markup.
        finalize=_escape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render(template: str, **context: object) -> str:
    """Render one page template with ``context``."""
    return environment().get_template(template).render(**context)


def macro(template: str, name: str) -> Callable[..., str]:
    """A macro of a template, callable from Python (e.g. one table for a test)."""
    fn = getattr(environment().get_template(template).module, name)
    return lambda *args, **kwargs: str(fn(*args, **kwargs))


def safe(text: str) -> Any:
    """Mark generated HTML (a plotly fragment, plotly.js) as not to be escaped."""
    from markupsafe import Markup

    return Markup(text)

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

"""The console's pages as text: Jinja2 templates (console/templates) with the filters they use. Knows
nothing of requests, so the WSGI plumbing (app.py) can render its error page and the handlers
(routes.py) their pages without importing each other."""

from __future__ import annotations

import functools
import os
from datetime import datetime
from typing import Any

from imgsync.libraries import LIBRARIES


@functools.cache
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["shown"] = shown
    env.filters["when"] = when
    env.globals["libraries"] = list(LIBRARIES)
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def shown(value: object) -> str:
    """Text for a page: a file name that is not valid UTF-8 (lone surrogates) shows its bytes as \\xNN."""
    text = str(value)
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def when(value: datetime | float | None) -> str:
    if value is None:
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value).astimezone()
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")

"""Render the templates under templates/ (a tree that mirrors target paths).

Rendering happens locally and the result is uploaded with `files.put`, so the same
function serves deploys, unit tests and `--dry --diff`.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def systemd_quote(value: str) -> str:
    """Quote a value for a systemd `Environment=` line (double quotes, escapes)."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


_ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_ENV.filters["systemd_quote"] = systemd_quote


def render(template: str, **context) -> str:
    """Render `templates/<template>` with strict undefined variables."""
    return _ENV.get_template(template).render(**context)


def render_io(template: str, **context) -> StringIO:
    return StringIO(render(template, **context))

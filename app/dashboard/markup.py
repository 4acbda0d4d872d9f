"""Text from files and from users, made safe for Panel's Markdown panes.

Panel renders Markdown with raw HTML allowed, so a results file whose ``status`` attribute is
``<img src=x onerror=...>`` would run script in every browser that opens it, and a file name or an error
message can break out of a code span. Every value that did not come from this program's own text goes
through one of these before it becomes Markdown: it is then shown exactly as it is, never interpreted.
"""

from __future__ import annotations

import html
import re

from qcf_studio.engine.textlimits import clip

__all__ = ["md_text", "md_code", "md_block"]

# What makes inline Markdown of running text: emphasis, code, links and images ([ ]), strikethrough, escapes.
# Block markers (#, -, 1.) only act at the start of a line, and these values never start one.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]~|])")


def md_text(value: object, limit: int = 2000) -> str:
    """``value`` as Markdown text that renders as itself: HTML escaped, Markdown punctuation backslashed,
    at most ``limit`` characters."""
    text = clip(str(value), limit) if limit else str(value)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))


def md_code(value: object, limit: int = 400) -> str:
    """``value`` as an inline code span (on one line): its content is never read as HTML or Markdown."""
    text = " ".join(clip(str(value), limit).splitlines()) or " "
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def md_block(value: object, limit: int = 4000) -> str:
    """``value`` as a fenced code block (several lines kept), whatever fences it contains itself."""
    text = str(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}\n{text}\n{fence}"

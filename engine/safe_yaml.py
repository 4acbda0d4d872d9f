"""YAML text from anyone (a spec pasted in the browser, a file) → Python objects, refusing what would
freeze or exhaust the process before it is built.

``yaml.safe_load`` builds no code objects, but a few hundred bytes of anchors and aliases ("billion
laughs") describe a structure that is gigabytes once anything walks it, and deep nesting or megabytes of
text make parsing slow. :func:`load_yaml` first reads the document's *events* with libyaml (the C
parser, where available) and counts, without building anything: the text's size, the nesting depth, and
the number of nodes the document has once every alias is expanded. Only a document within all three
bounds is loaded.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["YAMLRefused", "load_yaml", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES"]

MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 32  # a spec nests 4 deep
MAX_YAML_NODES = 10_000  # scalars and collections once aliases are expanded (a spec has about 150)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLRefused(ValueError):
    """A document refused for its size, depth or expansion (``message`` says which), or not valid YAML."""


def load_yaml(
    text: str, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_YAML_DEPTH, max_nodes: int = MAX_YAML_NODES
) -> Any:
    """The object the YAML ``text`` describes; :class:`YAMLRefused` if it is larger than ``max_bytes``
    (UTF-8), nests deeper than ``max_depth`` or expands to more than ``max_nodes`` nodes."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise YAMLRefused(f"{size:,} bytes of YAML; at most {max_bytes:,} are read")
    try:
        _check_events(text, max_depth, max_nodes)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (CSafeLoader/SafeLoader: no arbitrary objects)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = str(getattr(e, "problem", None) or type(e).__name__)[:100]
        raise YAMLRefused(f"not valid YAML{line}: {problem}") from None
    except YAMLRefused:
        raise
    except (ValueError, RecursionError) as e:  # e.g. an integer past Python's 4300-digit limit
        raise YAMLRefused(f"cannot read the YAML: {type(e).__name__}: {str(e)[:100]}") from None


def _check_events(text: str, max_depth: int, max_nodes: int) -> None:
    anchored: dict[str, int] = {}  # anchor -> expanded node count of what it names
    open_nodes: list[list[Any]] = []  # [anchor, expanded count so far] per collection being read
    total = 0

    def finished(anchor: str | None, count: int) -> None:
        nonlocal total
        if anchor is not None:
            anchored[anchor] = count
        if open_nodes:
            open_nodes[-1][1] += count
            count = open_nodes[-1][1]
        else:
            total += count
            count = total
        if count > max_nodes:
            raise YAMLRefused(
                f"the document expands to more than {max_nodes:,} values (anchors and aliases); write it out plainly"
            )

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.ScalarEvent):
            finished(event.anchor, 1)
        elif isinstance(event, yaml.AliasEvent):
            finished(None, anchored.get(event.anchor, 1))
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([event.anchor, 1])
            if len(open_nodes) > max_depth:
                raise YAMLRefused(f"nested more than {max_depth} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_nodes.pop()
            finished(anchor, count)

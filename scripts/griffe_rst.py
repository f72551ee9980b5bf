"""A griffe extension for the docs site's API reference (mkdocs.yml loads it; nothing else imports it).

noisysam's docstrings are free text written for ``help()`` with a little reStructuredText in them. mkdocstrings
renders docstrings as Markdown, where three RST habits come out wrong; this rewrites them in the text it renders
(the code is not touched):

- Sphinx roles, ``:func:`train``` or ``:class:`~noisysam.methods.Method```, become code: ``train``, ``Method``
  (a leading ``~`` keeps the last name, as Sphinx shows it).
- A paragraph ending in ``::`` before an indented literal block ends in ``:`` (the block is already a Markdown
  code block); a ``::`` alone on its line goes.
- A simple table (rows between ``=====  =====`` borders) is fenced as text, so its columns stay aligned.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):`(~?)([^`]+)`")
BORDER = re.compile(r"^\s*=+(?:\s+=+)+\s*$")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def rst_to_markdown(text: str) -> str:
    text = ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if BORDER.match(line):  # a simple table: fence it up to its last border line
            j, last = i, i
            while j < len(lines) and lines[j].strip():
                if BORDER.match(lines[j]):
                    last = j
                j += 1
            out += ["```text", *lines[i:last + 1], "```"]
            i = last + 1
            continue
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()
            line = "" if stripped.strip() == "::" else stripped[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring as it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

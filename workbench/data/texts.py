"""The shipped text collection: English that needs no download, and sequences to test recitation.

* ``python_documents(split)`` streams the docstrings of the Python standard library installed
  with the interpreter (PSF License v2; read with ``ast``, nothing is imported). One source file
  in ten, chosen by a hash of its path, is held out, so perplexity is never measured on text the
  curvature was estimated on.
* ``memorization_candidates()`` are sequences real language models are known to recite: licence
  texts (MIT, BSD, Apache-2.0, GPL, PSF), the Zen of Python and famous public-domain openings,
  each with its source and licence (``workbench/data/shipped/README.md``).

Both are used when a probe runs on a real language model and is given no text of its own.
"""

from __future__ import annotations

import ast
import functools
import json
import sysconfig
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workbench.errors import DataError

SHIPPED = Path(__file__).parent / "shipped"
CANDIDATES_FILE = SHIPPED / "memorization_candidates.jsonl"
HELD_OUT_EVERY = 10
"""One standard-library source file in this many is held out."""
MIN_DOC_CHARS = 80
_SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo"}


@dataclass(frozen=True)
class Candidate:
    """One sequence a model may have memorized, with where it comes from."""

    name: str
    source: str
    licence: str
    text: str


@functools.lru_cache(maxsize=1)
def memorization_candidates() -> tuple[Candidate, ...]:
    """The shipped candidates, in file order."""
    out = []
    for line in CANDIDATES_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Candidate(**json.loads(line)))
    return tuple(out)


def _source_files(split: str) -> list[Path]:
    """The standard library's source files of one split, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        relative = path.relative_to(root)
        if _SKIP_PARTS & set(relative.parts[:-1]) or path.name.startswith("test"):
            continue
        held_out = zlib.crc32(relative.as_posix().encode()) % HELD_OUT_EVERY == 0
        if (split == "held_out") == held_out:
            out.append(path)
    return out


def python_documents(split: Literal["train", "held_out"] = "train") -> Iterator[str]:
    """Docstrings of the standard library, one document each, in a fixed order.

    Lazy: files are read one at a time, so a caller that stops early reads only what it used.
    Docstrings holding a memorization candidate's opening are skipped.
    """
    if split not in ("train", "held_out"):
        raise DataError(f"split must be 'train' or 'held_out'; got {split!r}")
    openings = [c.text[:40] for c in memorization_candidates()]
    found = False
    for path in _source_files(split):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOC_CHARS and not any(o in doc for o in openings):
                    found = True
                    yield doc
    if not found:
        raise DataError(
            "found no standard-library docstrings to use as text (is the Python installation "
            "stripped of its sources?); pass a corpus of your own"
        )

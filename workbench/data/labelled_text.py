"""A user's own labelled text, from a CSV or JSON Lines file.

Three layouts, told apart by their columns (keys):

- ``text,label``: one label for the whole text (a sentence's topic, tense, sentiment, ...);
- ``text,word,label``: a label for one word of the text (its first whole-word occurrence); a
  text may appear on several rows, one per labelled word, and is read once;
- JSON Lines only, ``words`` and ``labels`` lists of equal length: a label per word (``null``
  for a word without one), the text being the words joined by spaces (CoNLL-style tagging).

An optional ``group`` column (key) names what must stay on one side of a cross-validation split:
rows sharing a group are never split between training and held-out folds. A probe grouped by,
say, the verb of a sentence is scored on verbs it has not seen.

Every layout becomes ``LabelledText`` items: the text and the labelled character spans in it
(one span covering the whole text for a sentence label).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.errors import DataError

TEXT_FORMATS = ("csv", "jsonl")
LabelKind = Literal["sentence", "word"]


@dataclass(frozen=True)
class LabelledText:
    text: str
    spans: tuple[tuple[int, int, str, str], ...]
    """(start, end, label, group) character spans; a sentence label spans the whole text; the
    group is "" where the file gives none."""


@dataclass(frozen=True)
class LabelledTexts:
    items: list[LabelledText]
    kind: LabelKind
    source: str


def check_text_file(path: str | Path, fmt: str) -> None:
    """Fail fast, before any model loads: the file exists and its first record has the columns
    (keys) of one of the layouts."""
    path = Path(path)
    if fmt not in TEXT_FORMATS:
        raise DataError(f"unknown text format {fmt!r}; choose one of {', '.join(TEXT_FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path} is not a file. Point data_path at your {fmt.upper()} file.")
    first = next(_records(path, fmt), None)
    if first is None:
        raise DataError(f"{path} holds no records: {_LAYOUTS}")
    _kind(first[1], path, first[0])


def read_labelled_text(path: str | Path, fmt: str) -> LabelledTexts:
    """Every labelled text of ``path`` (``fmt``: csv or jsonl), checked record by record."""
    path = Path(path)
    check_text_file(path, fmt)
    kind: LabelKind | None = None
    order: list[str] = []
    spans: dict[str, list[tuple[int, int, str, str]]] = {}
    missing: list[str] = []
    for where, record in _records(path, fmt):
        this = _kind(record, path, where)
        if kind is None:
            kind = this
        elif this != kind:
            raise DataError(
                f"{path} {where} has a {this} label but earlier records have {kind} labels; "
                "keep one layout per file"
            )
        text, found = _spans(record, path, where)
        if text is None:
            missing.append(f"{where}: {record.get('word')!r}")
            continue
        if text not in spans:
            order.append(text)
            spans[text] = []
        spans[text].extend(s for s in found if s not in spans[text])
    if missing:
        raise DataError(
            f"{path}: {len(missing)} labelled word(s) do not occur as whole words in their "
            f"text, e.g. {', '.join(missing[:3])}; fix the word or the text"
        )
    items = [LabelledText(t, tuple(spans[t])) for t in order if spans[t]]
    labels = {span[2] for item in items for span in item.spans}
    if len(labels) < 2:
        raise DataError(
            f"{path} has {len(labels)} distinct label(s); a probe needs at least two classes"
        )
    assert kind is not None  # check_text_file saw a first record
    return LabelledTexts(items, kind, str(path))


_LAYOUTS = (
    "give columns text,label (a label per text) or text,word,label (a label per word); "
    "JSON Lines may also give words and labels lists"
)


def _records(path: Path, fmt: str) -> Any:
    """(where, record) pairs: a CSV row or a JSON Lines object, with its line for messages."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if fmt == "csv":
                reader = csv.DictReader(handle)
                for row in reader:
                    yield (
                        f"row {reader.line_num}",
                        {(k or "").strip().lower(): v for k, v in row.items()},
                    )
                return
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path} line {number} is not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path} line {number} is not a JSON object: {_LAYOUTS}")
                yield f"line {number}", {str(k).lower(): v for k, v in record.items()}
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not readable CSV ({exc})") from None


def _kind(record: dict[str, Any], path: Path, where: str) -> LabelKind:
    if "words" in record or "labels" in record:
        return "word"
    if "text" not in record or "label" not in record:
        raise DataError(f"{path} {where} has keys {sorted(record)}: {_LAYOUTS}")
    return "word" if record.get("word") not in (None, "") else "sentence"


def _spans(
    record: dict[str, Any], path: Path, where: str
) -> tuple[str | None, list[tuple[int, int, str, str]]]:
    """The record's text and labelled spans; (None, []) when its word is not in its text."""
    group = "" if record.get("group") in (None, "") else str(record["group"])
    if "words" in record or "labels" in record:
        words, labels = record.get("words"), record.get("labels")
        if not isinstance(words, list) or not isinstance(labels, list):
            raise DataError(f"{path} {where}: words and labels must both be lists")
        if len(words) != len(labels) or not words:
            raise DataError(
                f"{path} {where}: {len(words)} words but {len(labels)} labels; give one label "
                "(or null) per word"
            )
        spans, start = [], 0
        for word, label in zip(words, labels, strict=True):
            word = str(word)
            if label not in (None, ""):
                spans.append((start, start + len(word), str(label), group))
            start += len(word) + 1
        return " ".join(str(w) for w in words), spans
    text, label = _field(record, "text", path, where), _field(record, "label", path, where)
    word = record.get("word")
    if word in (None, ""):
        return text, [(0, len(text), label, group)]
    found = re.search(rf"(?<!\w){re.escape(str(word))}(?!\w)", text)
    if found is None:
        return None, []
    return text, [(found.start(), found.end(), label, group)]


def _field(record: dict[str, Any], key: str, path: Path, where: str) -> str:
    value = record.get(key)
    if value is None or not str(value).strip():
        raise DataError(f"{path} {where} has an empty {key}")
    return str(value)

"""Text corpora of your own, streamed: never read whole, so their size does not matter.

``read_documents(path)`` yields documents from

* a text file (``.txt``, ``.md`` or any other non-JSON file): paragraphs separated by blank lines;
* a JSONL file: one JSON object per line, its ``text_field`` (``"text"``) is the document;
* a folder: every ``.txt``, ``.md`` and ``.jsonl`` file below it, in sorted order;
* a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (memory-mapped, read row by
  row; a ``DatasetDict`` gives its ``train`` split, else its first).

``TokenBatches`` tokenises a document stream with a model's tokenizer and packs the tokens into
sequences of equal length (documents separated by the end-of-text token), up to a token budget.
Iterating it again reads the documents again, so a second pass over a large corpus costs no
memory either. ``read_pairs`` reads prefix/suffix pairs (JSONL) for memorization tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.errors import DataError

SEQUENCE_KEY = "sequence_index"
"""Key of each batch row's place in the whole packed stream (``TokenBatches``): what makes a
consumer's per-sequence randomness independent of batching and of sharding across processes."""
UNKNOWN_WARNING_SHARE = 0.05
"""Texts with more than this share of unknown tokens get a warning (``encode_texts``)."""
TEXT_SUFFIXES = (".txt", ".md")
MAX_PARAGRAPH_CHARS = 1 << 16
"""A text file without blank lines is cut into documents of at most this many characters."""


def read_documents(path: str | Path, *, text_field: str = "text") -> Iterator[str]:
    """The documents of ``path`` one at a time (see the module docstring for the formats)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"corpus {path} does not exist; give a text file, JSONL, folder or dataset")
    if path.is_dir():
        if _is_saved_dataset(path):
            yield from _dataset_documents(path, text_field)
            return
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in (*TEXT_SUFFIXES, ".jsonl")
        )
        if not files:
            raise DataError(f"folder {path} holds no .txt, .md or .jsonl files")
        for file in files:
            yield from read_documents(file, text_field=text_field)
    elif path.suffix == ".jsonl":
        yield from _jsonl_documents(path, text_field)
    else:
        yield from _paragraphs(path)


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    """Prefix/suffix pairs from a JSONL file: ``{"prefix": ..., "suffix": ...}`` per line (an
    optional ``"name"``); or ``{"text": ...}`` lines, split by the caller at token boundaries."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".jsonl":
        raise DataError(f"a memorization set is a .jsonl file of prefix/suffix pairs; got {path}")
    pairs = []
    for number, record in _jsonl_records(path):
        has_pair = isinstance(record.get("prefix"), str) and isinstance(record.get("suffix"), str)
        if not has_pair and not isinstance(record.get("text"), str):
            raise DataError(
                f"{path}:{number}: each line needs string fields prefix and suffix (or text)"
            )
        pairs.append(
            {k: str(v) for k, v in record.items() if k in ("name", "prefix", "suffix", "text")}
        )
    if not pairs:
        raise DataError(f"{path} holds no prefix/suffix pairs")
    return pairs


def unknown_share(tokenizer: Any, text: str, ids: Sequence[int]) -> float:
    """Share of ``ids`` (``text``'s tokens, without added specials) the tokenizer could not read.

    An unknown token is the tokenizer's unk id standing for something else than the unk token
    spelled out in the text: GPT-2-style tokenizers use ``<|endoftext|>`` as unk, BOS and EOS at
    once, and a special token is never an unknown word.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not len(ids):
        return 0.0
    unknown = sum(1 for i in ids if i == unk) - text.count(str(tokenizer.unk_token))
    return max(unknown, 0) / len(ids)


def _paragraphs(path: Path) -> Iterator[str]:
    lines: list[str] = []
    size = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                lines.append(line)
                size += len(line)
                if size < MAX_PARAGRAPH_CHARS:
                    continue
            if lines:
                yield "".join(lines).strip()
            lines, size = [], 0
    if lines:
        yield "".join(lines).strip()


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number} is not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number} must be a JSON object")
            yield number, record


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    for number, record in _jsonl_records(path):
        text = record.get(text_field)
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{number} has no string field {text_field!r} (fields: "
                f"{', '.join(record) or 'none'}); set text_field to the field holding the text"
            )
        yield text


def _is_saved_dataset(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json"))


def _dataset_documents(path: Path, text_field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{path} is a saved `datasets` dataset; install the datasets package to read it"
        ) from None
    data = datasets.load_from_disk(str(path))  # memory-mapped Arrow files: nothing is read yet
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else data[next(iter(data))]
    if text_field not in data.column_names:
        raise DataError(
            f"dataset {path} has no column {text_field!r} (columns: "
            f"{', '.join(data.column_names)}); set text_field"
        )
    for row in data.select_columns([text_field]):
        yield str(row[text_field])


@dataclass
class TokenBatches:
    """Batches of ``seq_len``-token sequences packed from a document stream, up to ``max_tokens``.

    ``documents`` is called once per pass and must return a fresh iterable each time. Tokens of
    consecutive documents are joined with ``separator_id`` (the end-of-text token; None joins
    them directly) and cut into full sequences; the last, partial one is dropped. Each batch is
    ``{"input_ids", "attention_mask", SEQUENCE_KEY}`` with ``batch_size`` rows (fewer in the
    last batch); ``SEQUENCE_KEY`` holds each row's index in the whole packed stream.

    ``shard=(rank, world)`` keeps every ``world``-th sequence, starting at ``rank``: the
    processes of a data-parallel job each read the documents and pack them alike (tokenising is
    cheap next to the model), and together see every sequence of one process's pass once.
    """

    documents: Callable[[], Iterable[str]]
    tokenizer: Any
    seq_len: int
    max_tokens: int
    batch_size: int = 8
    separator_id: int | None = None
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if self.seq_len < 2 or self.max_tokens < self.seq_len or self.batch_size < 1:
            raise DataError(
                f"need seq_len >= 2, max_tokens >= seq_len and batch_size >= 1; got "
                f"{self.seq_len}, {self.max_tokens}, {self.batch_size}"
            )
        rank, world = self.shard
        if world < 1 or not 0 <= rank < world:
            raise DataError(f"shard is (rank, world) with 0 <= rank < world; got {self.shard}")

    @property
    def n_sequences(self) -> int:
        """Sequences a pass of this shard yields when the corpus is long enough."""
        rank, world = self.shard
        return len(range(rank, self.max_tokens // self.seq_len, world))

    @property
    def n_tokens(self) -> int:
        return self.n_sequences * self.seq_len

    def indexed_sequences(self) -> Iterator[tuple[int, list[int]]]:
        """This shard's packed sequences with their index in the whole stream, one at a time."""
        rank, world = self.shard
        total = self.max_tokens // self.seq_len
        buffer: list[int] = []
        made = 0
        for doc in self.documents():
            ids = self.tokenizer(doc, add_special_tokens=False)["input_ids"]
            if buffer and self.separator_id is not None:
                buffer.append(self.separator_id)
            buffer.extend(ids)
            while len(buffer) >= self.seq_len:
                if made % world == rank:
                    yield made, buffer[: self.seq_len]
                buffer = buffer[self.seq_len :]
                made += 1
                if made >= total:
                    return

    def sequences(self) -> Iterator[list[int]]:
        """This shard's packed sequences, one at a time."""
        for _, seq in self.indexed_sequences():
            yield seq

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows: list[tuple[int, list[int]]] = []
        for row in self.indexed_sequences():
            rows.append(row)
            if len(rows) == self.batch_size:
                yield _batch(rows)
                rows = []
        if rows:
            yield _batch(rows)

    def tensor(self) -> torch.Tensor:
        """All sequences of one pass as one (n, seq_len) tensor: for small sets only."""
        rows = list(self.sequences())
        if not rows:
            raise DataError(
                f"the corpus gave no sequence of {self.seq_len} tokens; give more text or lower "
                "seq_len"
            )
        return torch.tensor(rows, dtype=torch.long)


def _batch(rows: list[tuple[int, list[int]]]) -> dict[str, torch.Tensor]:
    ids = torch.tensor([seq for _, seq in rows], dtype=torch.long)
    index = torch.tensor([i for i, _ in rows], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), SEQUENCE_KEY: index}

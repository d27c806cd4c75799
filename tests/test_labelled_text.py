"""The atlas on a user's own labelled text: CSV and JSON Lines, sentence and word labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from probes import atlas
from probes.atlas.data import text_positions
from workbench.data.labelled_text import read_labelled_text
from workbench.errors import ConfigError, DataError
from workbench.models import load_model
from workbench.probe import make_config
from workbench.runner import plan_run

FOODS = [
    "bread",
    "cheese",
    "soup",
    "apple",
    "cake",
    "pizza",
    "pasta",
    "butter",
    "salad",
    "honey",
    "potato",
    "carrot",
]
VEHICLES = [
    "car",
    "bus",
    "truck",
    "train",
    "bicycle",
    "boat",
    "ship",
    "plane",
    "taxi",
    "tram",
    "van",
    "tractor",
]
FRAMES = (
    "yesterday we talked about the {} for a while",
    "my neighbour could not stop thinking about the {}",
    "the old photo showed a {} next to the house",
)


def _sentences() -> list[tuple[str, str]]:
    return [
        (frame.format(word), topic)
        for topic, words in (("food", FOODS), ("vehicle", VEHICLES))
        for word in words
        for frame in FRAMES
    ]


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def minilm():
    return load_model("zoo:minilm")


def test_sentence_labels_from_csv_are_decodable(minilm, tmp_path):
    path = _write_csv(tmp_path / "topics.csv", ["text", "label"], _sentences())
    config = make_config(
        "atlas",
        params={"dataset": "csv", "data_path": str(path), "methods": ["pca"], "folds": 3},
    )
    result = atlas.run(minilm, config)
    m = result.metrics
    # the topic word sits mid-sentence; the text's last token must still carry it
    assert m["peak_accuracy"] > m["chance_accuracy"] + 0.3
    assert m["n_points"] == len(_sentences()) and m["label"] == "sentence label"
    assert list(result.arrays["label_names"]) == ["food", "vehicle"]


def test_word_labels_point_at_the_words_last_token(minilm, tmp_path):
    rows = [
        (text, text.split()[-1 if i % 2 else 0], "last" if i % 2 else "first")
        for i, (text, _) in enumerate(_sentences()[:6])
    ]
    path = _write_csv(tmp_path / "words.csv", ["text", "word", "label"], rows)
    data = read_labelled_text(path, "csv")
    assert data.kind == "word" and len(data.items) == 6
    positions = text_positions(minilm, data, 100)
    tokenizer = minilm.processor
    ids = positions.inputs["input_ids"]
    for (row, token), (_, word, _) in zip(positions.positions, rows, strict=True):
        piece = tokenizer.convert_ids_to_tokens(int(ids[row, token]))
        assert word.endswith(piece.removeprefix("##")), (word, piece)
        following = tokenizer.convert_ids_to_tokens(int(ids[row, token + 1]))
        assert not following.startswith("##")  # the word's last piece, not a middle one


def test_jsonl_word_tags_and_repeated_texts(minilm, tmp_path):
    path = tmp_path / "tags.jsonl"
    lines = [
        {"words": ["the", "red", "bus", "stopped"], "labels": [None, "colour", "vehicle", None]},
        {"words": ["a", "blue", "car"], "labels": [None, "colour", "vehicle"]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = read_labelled_text(path, "jsonl")
    assert [i.text for i in data.items] == ["the red bus stopped", "a blue car"]
    assert data.items[0].spans == ((4, 7, "colour", ""), (8, 11, "vehicle", ""))
    positions = text_positions(minilm, data, 100)
    assert positions.label_names == ("colour", "vehicle")
    assert list(positions.colourings["word"]) == ["red", "bus", "blue", "car"]
    assert len(set(positions.groups.tolist())) == 4  # CV groups are word forms
    # one text on several rows (one per labelled word) is read once
    csv_path = _write_csv(
        tmp_path / "rows.csv",
        ["text", "word", "label"],
        [("the red bus", "red", "colour"), ("the red bus", "bus", "vehicle")],
    )
    rows = read_labelled_text(csv_path, "csv")
    assert len(rows.items) == 1 and len(rows.items[0].spans) == 2


def test_at_most_n_texts_a_seeded_choice(minilm, tmp_path):
    path = _write_csv(tmp_path / "topics.csv", ["text", "label"], _sentences())
    data = read_labelled_text(path, "csv")
    first = text_positions(minilm, data, 10, seed=3)
    again = text_positions(minilm, data, 10, seed=3)
    assert len(first.positions) == 10
    assert np.array_equal(first.hover, again.hover)
    assert len(set(first.labels.tolist())) == 2  # not the file's first ten (all "food")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence,category\na,b\n", "give columns text,label"),
        ("text,label\nhello there,a\nhello again,a\n", "at least two classes"),
        ("text,label\nhello there,\n", "empty label"),
    ],
)
def test_bad_files_fail_in_one_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_labelled_text(path, "csv")


def test_bad_files_fail_when_the_config_is_built(tmp_path):
    with pytest.raises(ConfigError, match="needs data_path"):
        make_config("atlas", params={"dataset": "csv"})
    with pytest.raises(ConfigError, match="is not a file"):
        make_config("atlas", params={"dataset": "csv", "data_path": str(tmp_path / "no.csv")})
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sentence,category\na,b\n")
    with pytest.raises(ConfigError, match="text,label"):
        make_config("atlas", params={"dataset": "csv", "data_path": str(wrong)})
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 au lait,drink\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        make_config("atlas", params={"dataset": "csv", "data_path": str(latin)})


def test_word_missing_from_its_text_and_mixed_layouts_are_named(tmp_path):
    missing = _write_csv(
        tmp_path / "m.csv", ["text", "word", "label"], [("a red car", "blue", "colour")]
    )
    with pytest.raises(DataError, match="row 2: 'blue'"):
        read_labelled_text(missing, "csv")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"text": "a red car", "label": "x"})
        + "\n"
        + json.dumps({"text": "a red car", "word": "red", "label": "y"})
    )
    with pytest.raises(DataError, match="line 2 has a word label"):
        read_labelled_text(mixed, "jsonl")


def test_a_relative_data_path_survives_the_notebook_running_elsewhere(
    tmp_path, monkeypatch, scratch_models
):
    _write_csv(tmp_path / "topics.csv", ["text", "label"], _sentences())
    monkeypatch.chdir(tmp_path)
    plan = plan_run(
        "atlas",
        str(scratch_models["bert"]),
        out=tmp_path / "run",
        params={"dataset": "csv", "data_path": "topics.csv"},
    )
    assert plan.params["data_path"] == str(tmp_path / "topics.csv")


def test_a_group_column_keeps_its_rows_on_one_side_of_every_split(minilm, tmp_path):
    rows = [  # grouped by the topic word
        (frame.format(word), topic, word)
        for topic, words in (("food", FOODS), ("vehicle", VEHICLES))
        for word in words
        for frame in FRAMES
    ]
    path = _write_csv(tmp_path / "grouped.csv", ["text", "label", "group"], rows)
    positions = text_positions(minilm, read_labelled_text(path, "csv"), 1000)
    assert len(set(positions.groups.tolist())) == len(FOODS) + len(VEHICLES)
    assert set(positions.colourings["group"]) == set(FOODS) | set(VEHICLES)

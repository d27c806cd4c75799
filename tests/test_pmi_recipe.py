"""The pmi-stories recipe's data and schedule: what the zoo PMI models are trained on."""

from __future__ import annotations

import torch

from workbench.data.stories import solve
from workbench.zoo import pmi_stories as recipe


def test_length_batches_cover_every_story_once_shortest_first(monkeypatch):
    monkeypatch.setattr(recipe, "BATCH_SIZE", 16)
    stories = recipe.make_stories(100, seed=1, tasks=("one_fact", "recall"), n_facts=(2, 9))
    gen = torch.Generator().manual_seed(0)
    batches = recipe.length_batches(stories, gen)
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(100)) and len(batches) == 7
    lengths = [len(stories[i].tokens) for i in flat]
    assert lengths == sorted(lengths)
    again = recipe.length_batches(stories, gen)  # same lengths, new compositions
    assert [len(stories[i].tokens) for i in torch.cat(again).tolist()] == lengths
    assert torch.cat(again).tolist() != flat


def test_curriculum_holds_short_stories_then_grows_to_every_story(monkeypatch):
    monkeypatch.setattr(recipe, "STEPS", 1000)
    monkeypatch.setattr(recipe, "CURRICULUM", (0.2, 0.6))
    monkeypatch.setattr(recipe, "CURRICULUM_TOKENS", 28)
    limits = [recipe.curriculum_limit(step, 16, 100) for step in range(1001)]
    assert set(limits[:201]) == {28} and set(limits[600:]) == {100}
    assert limits == sorted(limits)
    assert 28 < limits[400] < 100
    monkeypatch.setattr(recipe, "CURRICULUM", (0.0, 0.0))
    assert recipe.curriculum_limit(1, 16, 100) == 100
    monkeypatch.setattr(recipe, "CURRICULUM_TOKENS", 10)  # never below the shortest story
    monkeypatch.setattr(recipe, "CURRICULUM", (0.5, 0.5))
    assert recipe.curriculum_limit(1, 16, 100) == 16


def test_training_and_held_out_stories_are_disjoint_and_answerable(monkeypatch):
    monkeypatch.setattr(recipe, "SET_SIZES", (300, 300))
    monkeypatch.setattr(recipe, "EVAL_SIZE", 200)
    train = recipe.training_stories(0)
    held = recipe.held_out_stories(0, train)
    assert {s.task for s in train} == {"one_fact", "recall"}
    assert not {s.text for s in train} & {s.text for s in held}
    assert all(solve(s.text) == s.answer for s in train + held)
    recall = [s for s in train if s.task == "recall"]
    assert {len(s.facts) for s in recall} == set(range(2, 2 * recipe.N_SLOTS + 1))
    longest = max(len(s.tokens) for s in train + held)
    assert longest <= recipe.model_config("pmi").max_positions
    ids, mask = recipe.encode_stories(held[:5])
    assert ids.shape == mask.shape and int(mask[0].sum()) == len(held[0].tokens)

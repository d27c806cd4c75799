"""The story generator: answers follow from the words, recall difficulty is what was asked."""

from __future__ import annotations

import pytest

from workbench.data.stories import (
    ANSWERS,
    PEOPLE,
    QUESTION,
    TASKS,
    VOCABULARY,
    make_stories,
    recall_length,
    recall_people,
    recall_stories,
    solve,
    uniform_chance,
)
from workbench.errors import DataError


def test_solver_answers_hand_written_stories():
    moved = "mary went to the kitchen . mary travelled to the garden . where is mary ?"
    assert solve(moved) == "garden"
    carried = (
        "john went to the office . john took the apple . sandra went to the hallway . "
        "sandra grabbed the milk . john moved to the bedroom . where is the apple ?"
    )
    assert solve(carried) == "bedroom"  # wherever the holder went last, before or after
    counted = (
        "fred took the apple . fred got the milk . fred dropped the apple . "
        "emma took the apple . how many objects is fred carrying ?"
    )
    assert solve(counted) == "one"
    with pytest.raises(DataError, match="cannot read the sentence"):
        solve("mary sang to the kitchen . where is mary ?")
    with pytest.raises(DataError, match="cannot read the question"):
        solve("mary went to the kitchen . who is mary ?")


@pytest.mark.parametrize("task", TASKS)
def test_every_answer_is_recoverable_from_the_story_alone(task):
    stories = make_stories(600, seed=4, tasks=(task,), n_facts=(3, 12), n_people=(2, 5))
    assert all(s.task == task for s in stories)
    assert [solve(s.text) for s in stories] == [s.answer for s in stories]
    for s in stories:
        assert set(s.tokens) <= set(VOCABULARY) and s.answer in ANSWERS
        assert len(s.sentence_of_token) == len(s.tokens) == len(s.role_of_token)
        assert s.sentence_of_token.count(QUESTION) == len(s.question)
        assert all(0 <= i < len(s.facts) for i in s.supporting)
    answers = {s.answer for s in stories}
    assert len(answers) >= 3  # not one answer every time
    assert uniform_chance(stories) in (1 / 6, 1 / 4)


@pytest.mark.parametrize(("facts_per_slot", "n_slots"), [(0.5, 8), (1.0, 8), (2.0, 8), (1.5, 4)])
def test_recall_difficulty_is_as_asked(facts_per_slot, n_slots):
    stories = recall_stories(200, facts_per_slot=facts_per_slot, n_slots=n_slots, seed=9)
    n_facts = round(facts_per_slot * n_slots)
    assert recall_length(facts_per_slot, n_slots) == n_facts
    for s in stories:
        assert s.task == "recall" and len(s.facts) == n_facts
        assert len(s.tokens) == 6 * n_facts + 4  # every fact a move, then "where is X ?"
        people = {f.person for f in s.facts}
        assert len(people) == recall_people(n_facts) and people <= set(PEOPLE)
        assert s.entity in people and s.question == ("where", "is", s.entity, "?")
        (last,) = s.supporting
        assert s.facts[last].person == s.entity and s.facts[last].target == s.answer
        assert all(f.person != s.entity for f in s.facts[last + 1 :])
    # any person may be asked about, not only the last to move: the answer may lie far back
    ages = [n_facts - 1 - s.supporting[0] for s in stories]
    assert sum(age == 0 for age in ages) < 0.7 * len(stories)
    assert max(ages) >= n_facts // 2


def test_recall_stories_are_deterministic_and_seeded():
    a = recall_stories(30, facts_per_slot=1.5, n_slots=8, seed=3)
    b = recall_stories(30, facts_per_slot=1.5, n_slots=8, seed=3)
    c = recall_stories(30, facts_per_slot=1.5, n_slots=8, seed=4)
    assert [s.text for s in a] == [s.text for s in b]
    assert [s.text for s in a] != [s.text for s in c]


def test_bad_recall_requests_fail_with_the_fix():
    longest = 2 * len(PEOPLE)
    assert len(recall_stories(2, facts_per_slot=longest / 8, n_slots=8)[0].facts) == longest
    with pytest.raises(DataError, match=f"at most {longest} facts"):
        recall_stories(2, facts_per_slot=(longest + 2) / 8, n_slots=8)
    with pytest.raises(DataError, match="facts_per_slot must be positive"):
        recall_stories(2, facts_per_slot=0.0, n_slots=8)
    with pytest.raises(DataError, match="n_slots"):
        recall_stories(2, facts_per_slot=1.0, n_slots=0)
    with pytest.raises(DataError, match="at least 2 facts"):
        make_stories(2, tasks=("recall",), n_facts=(1, 4))

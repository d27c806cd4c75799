"""bAbI-style stories where memory matters: who went where, who carries what, and how many.

Each story is a few one-line facts followed by a question whose answer depends on facts told
earlier, often several sentences back and overwritten by later ones:

- ``one_fact`` (bAbI task 1, single supporting fact): "mary went to the kitchen . ... where is
  mary ?" The answer is the place of the person's *last* move.
- ``two_facts`` (bAbI task 2, two supporting facts): "john took the apple . john went to the
  office . where is the apple ?" The answer is the final place of whoever took the object.
- ``counting`` (bAbI task 7): takes and drops; "how many objects is mary carrying ?"
- ``recall``: the single-supporting-fact question on stories longer than a small working
  memory holds. A story of ``n_facts`` moves has ``recall_people(n_facts)`` people (about one
  for every two facts), each of whom moves at least once, and the question asks about any of
  them, so the number of person-to-place bindings to keep grows with the story.
  ``recall_stories`` sets the length as a multiple of a memory's slots: the difficulty knob.

Everything is generated from a seed, so the same call gives the same stories. Every token knows
the sentence (fact) it belongs to and its role, and every story knows its supporting facts, so
views can colour memory slots by the entity or fact they hold. The vocabulary is small and fixed
(``VOCABULARY``); answers are places or count words (``ANSWERS``). ``solve`` answers a story
from its words alone, the reference the generator is tested against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import DataError

PEOPLE = (
    "mary",
    "john",
    "sandra",
    "daniel",
    "emma",
    "fred",
    "bill",
    "julie",
    "jeff",
    "lily",
    "greg",
    "brian",
)
PLACES = ("kitchen", "garden", "office", "hallway", "bedroom", "bathroom")
OBJECTS = ("apple", "football", "milk", "book")
MOVE_VERBS = ("went", "moved", "travelled", "journeyed")
TAKE_VERBS = ("took", "grabbed", "got")
DROP_VERBS = ("dropped", "discarded", "left")
COUNT_WORDS = ("none", "one", "two", "three")
FUNCTION_WORDS = ("to", "the", ".", "where", "is", "?", "how", "many", "objects", "carrying")

TASKS = ("one_fact", "two_facts", "counting", "recall")
ANSWERS: tuple[str, ...] = (*PLACES, *COUNT_WORDS)
"""Every possible answer, in the order of the models' output classes."""
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        (*PEOPLE, *PLACES, *OBJECTS, *MOVE_VERBS, *TAKE_VERBS, *DROP_VERBS, *FUNCTION_WORDS)
    )
)
"""Every word a story can contain (answers that are count words never appear in stories)."""

QUESTION = -1
"""Sentence index stored for the question's tokens."""


@dataclass(frozen=True)
class Fact:
    """One sentence of a story: ``person`` moved to / took / dropped ``target``."""

    kind: str  # "move", "take" or "drop"
    person: str
    target: str  # a place for moves, an object for takes and drops
    tokens: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass(frozen=True)
class Story:
    """A story, its question and answer, and per-token annotations for the views.

    ``sentence_of_token[i]`` is the index of the fact token ``i`` belongs to (``QUESTION`` for
    the question); ``role_of_token[i]`` is one of person, place, object, verb, function;
    ``supporting`` lists the facts the answer depends on; ``entity`` is what the question asks
    about (a person, or an object for ``two_facts``).
    """

    task: str
    facts: tuple[Fact, ...]
    question: tuple[str, ...]
    answer: str
    supporting: tuple[int, ...]
    entity: str

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(t for f in self.facts for t in f.tokens) + self.question

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def sentence_of_token(self) -> tuple[int, ...]:
        out = [i for i, f in enumerate(self.facts) for _ in f.tokens]
        return (*out, *([QUESTION] * len(self.question)))

    @property
    def role_of_token(self) -> tuple[str, ...]:
        return tuple(role_of(t) for t in self.tokens)

    @property
    def answer_index(self) -> int:
        return ANSWERS.index(self.answer)


def role_of(token: str) -> str:
    """What kind of word ``token`` is: person, place, object, verb or function."""
    if token in PEOPLE:
        return "person"
    if token in PLACES:
        return "place"
    if token in OBJECTS:
        return "object"
    if token in MOVE_VERBS or token in TAKE_VERBS or token in DROP_VERBS:
        return "verb"
    return "function"


def make_stories(
    n: int,
    *,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    n_facts: tuple[int, int] = (3, 6),
    n_people: tuple[int, int] = (2, 4),
) -> list[Story]:
    """``n`` stories, the tasks taking turns, each with ``n_facts`` facts (inclusive range).

    Deterministic under ``seed``. ``n_people`` bounds how many distinct people appear, except
    in ``recall`` stories, which have ``recall_people(k)`` people for ``k`` facts.
    """
    _check(n, seed, tasks, n_facts, n_people)
    rng = np.random.default_rng(seed)
    makers = {
        "one_fact": _one_fact,
        "two_facts": _two_facts,
        "counting": _counting,
        "recall": _recall,
    }
    stories = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        while True:  # rejection sampling: rare retries when a story has nothing to ask
            k = int(rng.integers(n_facts[0], n_facts[1] + 1))
            m = int(rng.integers(n_people[0], n_people[1] + 1))
            if task == "recall":
                m = recall_people(k)
            people = tuple(rng.choice(PEOPLE, size=m, replace=False).tolist())
            story = makers[task](rng, k, people)
            if story is not None:
                stories.append(story)
                break
    return stories


def recall_people(n_facts: int) -> int:
    """People in a ``recall`` story of ``n_facts`` facts: one for every two facts, at least two."""
    return max(2, (n_facts + 1) // 2)


def recall_length(facts_per_slot: float, n_slots: int) -> int:
    """Facts in a ``recall`` story that holds ``facts_per_slot`` facts per working-memory slot."""
    return max(1, round(facts_per_slot * n_slots))


def recall_stories(n: int, *, facts_per_slot: float, n_slots: int, seed: int = 0) -> list[Story]:
    """``n`` recall stories of ``recall_length(facts_per_slot, n_slots)`` facts each.

    The difficulty knob: at ``facts_per_slot`` 0.5 a memory of ``n_slots`` slots could give every
    fact two slots; at 2 it holds a quarter of the facts with one slot each, so the rest must
    be kept somewhere else (or looked up through the question).
    """
    if not isinstance(n_slots, int | np.integer) or n_slots < 1:
        raise DataError(f"n_slots must be a positive number of memory slots; got {n_slots!r}")
    if not facts_per_slot > 0:
        raise DataError(f"facts_per_slot must be positive; got {facts_per_slot!r}")
    k = recall_length(facts_per_slot, n_slots)
    return make_stories(n, seed=seed, tasks=("recall",), n_facts=(k, k))


def solve(text: str) -> str:
    """The answer to a story's question, worked out from its words alone.

    Replays the facts sentence by sentence (where each person is, who holds each object) and
    answers the question; an independent reference for the generator's ``Story.answer``.
    """
    *sentences, question = (part.split() for part in text.split(" . "))
    place: dict[str, str] = {}
    holder: dict[str, str] = {}  # object -> person holding it
    for words in sentences:
        person, verb, target = words[0], words[1], words[-1]
        if verb in MOVE_VERBS:
            place[person] = target
        elif verb in TAKE_VERBS:
            holder[target] = person
        elif verb in DROP_VERBS:
            del holder[target]
        else:
            raise DataError(f"cannot read the sentence {' '.join(words)!r}")
    if question[:2] == ["how", "many"]:
        person = question[4]
        return COUNT_WORDS[sum(p == person for p in holder.values())]
    if question[:2] == ["where", "is"]:
        entity = question[-2]
        person = holder[entity] if entity in OBJECTS else entity
        return place[person]
    raise DataError(f"cannot read the question {' '.join(question)!r}")


def majority_accuracy(train: Sequence[Story], test: Sequence[Story]) -> float:
    """Accuracy of answering every test story with its task's most common training answer."""
    best = {}
    for task in {s.task for s in train}:
        counts = Counter(s.answer for s in train if s.task == task)
        best[task] = counts.most_common(1)[0][0]
    hits = [best.get(s.task) == s.answer for s in test]
    return float(np.mean(hits)) if hits else float("nan")


def uniform_chance(stories: Sequence[Story]) -> float:
    """Accuracy of guessing uniformly among the answers each task allows."""
    options = {
        "one_fact": len(PLACES),
        "two_facts": len(PLACES),
        "counting": len(COUNT_WORDS),
        "recall": len(PLACES),
    }
    return float(np.mean([1.0 / options[s.task] for s in stories]))


# -- the three tasks ---------------------------------------------------------------------------
def _move(rng: np.random.Generator, person: str, place: str) -> Fact:
    verb = str(rng.choice(MOVE_VERBS))
    return Fact("move", person, place, (person, verb, "to", "the", place, "."))


def _take(rng: np.random.Generator, person: str, obj: str) -> Fact:
    return Fact("take", person, obj, (person, str(rng.choice(TAKE_VERBS)), "the", obj, "."))


def _drop(rng: np.random.Generator, person: str, obj: str) -> Fact:
    return Fact("drop", person, obj, (person, str(rng.choice(DROP_VERBS)), "the", obj, "."))


def _one_fact(rng: np.random.Generator, k: int, people: tuple[str, ...]) -> Story | None:
    facts = []
    for _ in range(k):
        facts.append(_move(rng, str(rng.choice(people)), str(rng.choice(PLACES))))
    person = facts[int(rng.integers(len(facts)))].person
    last = max(i for i, f in enumerate(facts) if f.person == person)
    return Story(
        "one_fact",
        tuple(facts),
        ("where", "is", person, "?"),
        facts[last].target,
        (last,),
        person,
    )


def _two_facts(rng: np.random.Generator, k: int, people: tuple[str, ...]) -> Story | None:
    facts: list[Fact] = []
    free = list(OBJECTS)
    for _ in range(k):
        person = str(rng.choice(people))
        if free and rng.random() < 0.4:
            obj = free.pop(int(rng.integers(len(free))))
            facts.append(_take(rng, person, obj))
        else:
            facts.append(_move(rng, person, str(rng.choice(PLACES))))
    moves = {f.person: i for i, f in enumerate(facts) if f.kind == "move"}
    askable = [(i, f) for i, f in enumerate(facts) if f.kind == "take" and f.person in moves]
    if not askable:
        return None
    i, take = askable[int(rng.integers(len(askable)))]
    last = moves[take.person]
    return Story(
        "two_facts",
        tuple(facts),
        ("where", "is", "the", take.target, "?"),
        facts[last].target,
        tuple(sorted((i, last))),
        take.target,
    )


def _counting(rng: np.random.Generator, k: int, people: tuple[str, ...]) -> Story | None:
    facts: list[Fact] = []
    holder: dict[str, str] = {}  # object -> person holding it
    for _ in range(k):
        person = str(rng.choice(people))
        held = [o for o, p in holder.items() if p == person]
        free = [o for o in OBJECTS if o not in holder]
        roll = rng.random()
        if held and roll < 0.3:
            obj = held[int(rng.integers(len(held)))]
            del holder[obj]
            facts.append(_drop(rng, person, obj))
        elif free and roll < 0.8:
            obj = free[int(rng.integers(len(free)))]
            holder[obj] = person
            facts.append(_take(rng, person, obj))
        else:
            facts.append(_move(rng, person, str(rng.choice(PLACES))))
    involved = sorted({f.person for f in facts if f.kind != "move"})
    if not involved:
        return None
    person = involved[int(rng.integers(len(involved)))]
    count = sum(p == person for p in holder.values())
    if count >= len(COUNT_WORDS):
        return None
    supporting = tuple(i for i, f in enumerate(facts) if f.person == person and f.kind != "move")
    return Story(
        "counting",
        tuple(facts),
        ("how", "many", "objects", "is", person, "carrying", "?"),
        COUNT_WORDS[count],
        supporting,
        person,
    )


def _recall(rng: np.random.Generator, k: int, people: tuple[str, ...]) -> Story | None:
    movers = [*people, *rng.choice(people, size=k - len(people)).tolist()]
    rng.shuffle(movers)
    facts = [_move(rng, str(person), str(rng.choice(PLACES))) for person in movers]
    person = str(rng.choice(people))
    last = max(i for i, f in enumerate(facts) if f.person == person)
    return Story(
        "recall",
        tuple(facts),
        ("where", "is", person, "?"),
        facts[last].target,
        (last,),
        person,
    )


def _check(
    n: int,
    seed: int,
    tasks: Sequence[str],
    n_facts: tuple[int, int],
    n_people: tuple[int, int],
) -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"n must be a positive number of stories; got {n!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer; got {seed!r}")
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown:
        raise DataError(f"tasks must be names from {', '.join(TASKS)}; got {tuple(tasks)!r}")
    if len(n_facts) != 2 or not 1 <= n_facts[0] <= n_facts[1]:
        raise DataError(f"n_facts must be (low, high) with 1 <= low <= high; got {n_facts!r}")
    if len(n_people) != 2 or not 1 <= n_people[0] <= n_people[1] <= len(PEOPLE):
        raise DataError(
            f"n_people must be (low, high) with 1 <= low <= high <= {len(PEOPLE)}; got {n_people!r}"
        )
    if "recall" in tasks and recall_people(n_facts[1]) > len(PEOPLE):
        raise DataError(
            f"recall stories need one person for every two facts; {n_facts[1]} facts need "
            f"{recall_people(n_facts[1])} of the {len(PEOPLE)} people: use at most "
            f"{2 * len(PEOPLE)} facts"
        )
    if "recall" in tasks and n_facts[0] < 2:
        raise DataError(f"recall stories need at least 2 facts (2 people); got {n_facts!r}")

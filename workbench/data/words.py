"""Sentences with one labelled word each: the word's semantic category is the label.

Every category's words appear in the same neutral templates, so the context says nothing about
the label: only the word itself does. Cross-validating with words grouped (no word in both
train and test) then asks whether a representation places unseen words of a category together,
which an untrained model cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_WORDS: dict[str, str] = {
    "animal": (
        "dog cat horse cow pig sheep goat mouse rabbit lion tiger bear wolf fox deer "
        "monkey elephant zebra camel snake frog duck eagle owl whale shark"
    ),
    "food": (
        "bread cheese rice soup apple banana cake pizza pasta butter salad sugar honey "
        "potato tomato carrot onion egg meat chocolate cookie sandwich"
    ),
    "colour": (
        "red blue green yellow purple pink brown black white gray violet silver golden "
        "crimson beige maroon navy turquoise"
    ),
    "body part": (
        "hand foot head arm leg knee elbow shoulder finger toe nose ear eye mouth "
        "tongue tooth neck chest stomach heart lung liver skin"
    ),
    "vehicle": (
        "car bus truck train bicycle boat ship plane helicopter motorcycle taxi tram "
        "van tractor subway jeep rocket canoe yacht wagon"
    ),
    "profession": (
        "doctor teacher lawyer nurse farmer pilot engineer chef baker painter soldier "
        "judge singer actor dentist carpenter banker waiter writer"
    ),
    "place": (
        "city village town forest desert beach mountain river lake island valley ocean "
        "park garden airport hospital school library museum church"
    ),
}
CATEGORIES: dict[str, tuple[str, ...]] = {k: tuple(v.split()) for k, v in _WORDS.items()}
"""Category -> words: concrete, unambiguous, and one token each in common vocabularies."""

TEMPLATES: tuple[str, ...] = (
    "i thought about the {} all day .",
    "she wrote the word {} on the board .",
    "there was a {} in the old story .",
    "we talked about the {} yesterday .",
    "he said {} twice and then stopped .",
    "the next word on the list is {} .",
)


@dataclass(frozen=True)
class WordSentence:
    text: str
    word: str
    category: str
    template: int
    span: tuple[int, int]  # character span of the word in ``text``


def word_sentences(
    n: int | None = None, *, seed: int = 0, templates: tuple[str, ...] = TEMPLATES
) -> list[WordSentence]:
    """Every (word, template) sentence, shuffled by ``seed``; the first ``n`` if given."""
    items = []
    for category, words in CATEGORIES.items():
        for word in words:
            for t, template in enumerate(templates):
                start = template.index("{}")
                text = template.format(word)
                items.append(WordSentence(text, word, category, t, (start, start + len(word))))
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    return items if n is None else items[:n]

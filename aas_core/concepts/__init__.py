"""Character personalization: learn a character from photos (TimeInv) and use `<name>` in any prompt.

Import is cheap (no torch); models load when training or applying concepts.
"""

from aas_core.concepts.inject import CONCEPT_BACKENDS, AppliedConcepts, ConceptBackend, apply_concepts
from aas_core.concepts.interop import embedding_from_file, export_textual_inversion, import_lora, import_textual_inversion
from aas_core.concepts.photos import CAPTION_TEMPLATES, Photo, load_photo, parse_photo_arg
from aas_core.concepts.store import (
    Concept,
    check_name,
    concepts_dir,
    delete_concept,
    list_concepts,
    load_concept,
)
from aas_core.concepts.timeinv import bucket_of, concept_names_in, token_for
from aas_core.concepts.train import TimeInvTrainer, TrainResult, TrainSettings, load_parts, train_concept


def load_concepts(names: list[str], root=None, base_model: str | None = None) -> list[Concept]:
    """Load several concepts by name (e.g. those `concept_names_in(prompt)` found)."""
    return [load_concept(n, root, base_model) for n in names]


__all__ = [
    "CAPTION_TEMPLATES",
    "CONCEPT_BACKENDS",
    "AppliedConcepts",
    "Concept",
    "ConceptBackend",
    "Photo",
    "TimeInvTrainer",
    "TrainResult",
    "TrainSettings",
    "apply_concepts",
    "bucket_of",
    "check_name",
    "concept_names_in",
    "concepts_dir",
    "delete_concept",
    "embedding_from_file",
    "export_textual_inversion",
    "import_lora",
    "import_textual_inversion",
    "list_concepts",
    "load_concept",
    "load_concepts",
    "load_parts",
    "load_photo",
    "parse_photo_arg",
    "token_for",
    "train_concept",
]

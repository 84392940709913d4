"""Teacher families, one module each (``vit``, ``ast``, ``cnn``: ``resnet`` and ``convnext``, ``mobilevit``),
in a registry.

Importing the package registers every family. The public entry points are in :mod:`audiokd.models.teacher`.
"""

from audiokd.models.teachers import ast, cnn, mobilevit, vit
from audiokd.models.teachers.registry import FAMILIES, Family, family, family_of, family_of_config

__all__ = [
    "FAMILIES",
    "Family",
    "ast",
    "cnn",
    "family",
    "family_of",
    "family_of_config",
    "mobilevit",
    "vit",
]

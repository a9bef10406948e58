"""Any hub model by id, for users who are online: ``hf:<model id>`` (e.g. ``hf:roberta-base``)."""

from __future__ import annotations

from peftbench import MODELS
from peftbench.plugin.model import TransformersModel

PREFIX = "hf:"


def resolve(name: str) -> TransformersModel | None:
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        return None
    model = TransformersModel(name[len(PREFIX) :], description=f"{name} from the hub")
    model.name = name
    return model


MODELS.add_resolver(resolve)

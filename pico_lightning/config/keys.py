"""Every config key with its type, default and docstring, read from the schema's own source (no torch import).

The docstring of a field is the string literal right under it in its dataclass (an attribute docstring, as in
``max_steps: int = 200`` followed by ``\"\"\"Optimizer steps.\"\"\"``); ``ast`` reads them since Python keeps none.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import NamedTuple

from pico_lightning.config.experiment import ExperimentConfig


class Key(NamedTuple):
    name: str
    """Dotted key, e.g. ``train.max_steps``."""
    type: str
    """The annotation as written in the source, e.g. ``Literal["constant", "cosine"]``."""
    default: object
    doc: str


def config_keys(schema: type = ExperimentConfig, prefix: str = "") -> list[Key]:
    """The leaf keys of ``schema`` in declaration order; nested dataclasses are walked (``train`` -> ``train.lr``)."""
    docs = attribute_docs(schema)
    keys = []
    for item in dataclasses.fields(schema):
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        if dataclasses.is_dataclass(default):
            keys += config_keys(type(default), f"{prefix}{item.name}.")
        else:
            keys.append(Key(f"{prefix}{item.name}", str(item.type), default, docs.get(item.name, "")))
    return keys


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it, cleaned (indentation removed, lines kept)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field_node, doc_node in zip(body, body[1:]):
        if (
            isinstance(field_node, ast.AnnAssign)
            and isinstance(field_node.target, ast.Name)
            and isinstance(doc_node, ast.Expr)
            and isinstance(doc_node.value, ast.Constant)
            and isinstance(doc_node.value.value, str)
        ):
            docs[field_node.target.id] = inspect.cleandoc(doc_node.value.value)
    return docs

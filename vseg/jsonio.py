"""JSON output shared by every command that measures.

Results are dicts that mix plain numbers with numpy arrays and paths. :func:`to_jsonable`
turns such a dict into something ``json`` can write, with NaN as ``null`` (JSON has no NaN),
and :func:`write_json` writes it atomically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vseg.data.palette import atomic_save


def to_jsonable(value):
    """Recursively convert numpy arrays and scalars to Python lists and numbers; NaN -> None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def write_json(path: str | os.PathLike, result: Mapping) -> Path:
    """Write ``result`` (an evaluation dict) as indented JSON, atomically."""
    path = Path(path)
    text = json.dumps(to_jsonable(result), indent=2) + "\n"
    atomic_save(path, lambda f: f.write(text.encode("utf-8")))
    return path

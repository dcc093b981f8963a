"""Export of the VOS models to ONNX engine folders (graphs, custom-op translations, parity).

- :mod:`vseg.export.graphs`: one nn.Module per engine; the ``torch`` backend runs these.
- :mod:`vseg.export.onnx_ops`: ONNX translations of vseg's custom ops, per flavour.
- :mod:`vseg.export.ort_custom_ops`: Python kernels of the ``vseg`` ONNX domain for
  onnxruntime and ``make_session``.
- :mod:`vseg.export.export_vos`: ``export_engines`` (graphs + parity + manifest.json).
"""

from __future__ import annotations

import importlib
from types import ModuleType


def optional_module(name: str) -> ModuleType | None:
    """Import ``name``, or None when that module does not exist (yet): other helpers add ops
    (e.g. ``vseg.ops.mv_warp``) that the export picks up once they are there."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:  # the module exists but something it imports is missing: a bug
            raise
        return None

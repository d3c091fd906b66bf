"""Optional dependencies (pyproject's extras), imported with one clear error when missing."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, why: str) -> ModuleType:
    """``import module``, or MissingExtraError: ``why needs module: pip install
    'deepae_jax[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{why} needs {module.split('.')[0]}, which is not installed: "
                                f"pip install 'deepae_jax[{extra}]'") from None

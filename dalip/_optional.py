"""Imports of packages that only an extra installs, failing with the install command to run.

The core install (``pip install dalip``) gives the poolers, losses, models and
evaluation; the recipe's plots and shard reader (``train``), the embedded Twemoji
data and the offline quickstart towers (``quickstart``) and the loggers (``wandb``)
come with extras. A missing one is reported where it is first needed, naming
the extra, never at ``import dalip``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """A package of a dalip extra is not installed; the message names the extra to install."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise an ImportError saying ``what`` needs it and which extra installs it.

    Args:
        module: the dotted module name (``"matplotlib.figure"``).
        extra: the dalip extra that installs it (``"train"``, ``"quickstart"``).
        what: the feature that needs it, for the message (``"the run plot"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise MissingExtraError(
            f"{what} needs the package {package!r}, which the '{extra}' extra installs: pip install 'dalip[{extra}]'"
        ) from err

"""One generic registry for every swappable component (poolers, losses, ...).

Components are registered under a name together with optional preset keyword
defaults, created from that name with keyword arguments, and listed with
shell-style wildcards, in the manner of ``timm.create_model`` /
``timm.list_models``:

```python
POOLERS = Registry("pooler")

@POOLERS.register("mean")
class MeanPool(Pooler): ...

POOLERS.register("isqrt_cov", defaults={"isqrt": True})(CovPool)
POOLERS.create("mbdc", dim=768, heads=4)
POOLERS.list("*cov*")   # ['cov', 'isqrt_cov']
```
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "RegistryEntry", "UnknownComponentError"]


class UnknownComponentError(ValueError):
    """Raised when a name is not in a registry; the message lists the known names."""


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """A registered constructor plus the preset keyword defaults it is created with."""

    name: str
    constructor: Callable[..., T]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def signature(self) -> inspect.Signature:
        """Signature of the constructor with the preset defaults filled in."""
        sig = inspect.signature(self.constructor)
        params = [
            p.replace(default=self.defaults[p.name]) if p.name in self.defaults else p
            for p in sig.parameters.values()
        ]
        return sig.replace(parameters=params)


class Registry(Generic[T]):
    """A name -> constructor table for one kind of component.

    Args:
        kind: what the registry holds, used in error messages (``"pooler"``).
        plural: the plural of ``kind`` (default ``kind + "s"``).
    """

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, RegistryEntry[T]] = {}

    def register(
        self,
        name: str | None = None,
        *,
        defaults: dict[str, Any] | None = None,
        description: str | None = None,
        overwrite: bool = False,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory under ``name``.

        Args:
            name: registry name; defaults to the constructor's ``__name__``.
            defaults: preset keyword arguments (a named configuration such as
                ``isqrt_cov = cov(isqrt=True)``); callers may still override them.
            description: one line for catalogues; defaults to the docstring's first line.
            overwrite: allow replacing an existing entry (otherwise an error).
        """

        def decorator(constructor: Callable[..., T]) -> Callable[..., T]:
            key = name or constructor.__name__
            if key in self._entries and not overwrite:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered; pass overwrite=True to replace it"
                )
            preset = dict(defaults or {})
            params = inspect.signature(constructor).parameters
            takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
            unknown = [k for k in preset if k not in params and not takes_kwargs]
            if unknown:
                raise TypeError(f"defaults for {self.kind} {key!r} name unknown arguments {unknown}")
            doc = description or (inspect.getdoc(constructor) or "").split("\n", 1)[0]
            self._entries[key] = RegistryEntry(key, constructor, preset, doc)
            return constructor

        return decorator

    def get(self, name: str) -> RegistryEntry[T]:
        """The entry registered as ``name``; unknown names list the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.plural}: {', '.join(self.list())}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component ``name`` with its preset defaults updated by ``kwargs``.

        Raises:
            UnknownComponentError: ``name`` is not registered (lists the known names).
            TypeError: a keyword is not accepted or a required one is missing
                (names the offending argument and lists the valid ones).
        """
        entry = self.get(name)
        options = {**entry.defaults, **kwargs}
        self._bind(name, options, partial=False)
        return entry.constructor(**options)

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Check, without building anything, that ``name`` exists and takes every key of ``options``.

        Arguments the caller supplies later (a pooler's ``dim``) may be missing.

        Raises:
            UnknownComponentError: ``name`` is not registered.
            TypeError: a keyword the constructor does not take (named, with the valid ones).
        """
        self._bind(name, {**self.get(name).defaults, **options}, partial=True)

    def valid_options(self, name: str) -> list[str]:
        """The keyword arguments the constructor of ``name`` takes (``["dim", "heads", ...]``)."""
        params = inspect.signature(self.get(name).constructor).parameters.values()
        return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]

    def _bind(self, name: str, options: dict[str, Any], partial: bool) -> None:
        sig = inspect.signature(self.get(name).constructor)
        try:
            sig.bind_partial(**options) if partial else sig.bind(**options)
        except TypeError as err:
            raise TypeError(f"{self.kind} {name!r}: {err}. Valid arguments: {', '.join(self.valid_options(name))}") from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style wildcard (``'*cov*'``)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"

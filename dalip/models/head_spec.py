"""`HeadSpec`: the one definition of a DALIP model's head options, checked without building anything.

The model (`DALIPModel`), the factory (`create_model`), a run's config (``model:``
section) and an export (``dalip_config.json``) all take these options; they are
named, defaulted and checked here only.

```python
spec = HeadSpec(second_order="mbdc", second_options={"heads": 4}, alpha=0.6)
spec.check()                       # ValueError naming the option, before any model is built
spec.per_tower()["image"]          # TowerHeads(first_order='tower', second_order='mbdc', second_options={'heads': 4})
create_model("effl0-minilm", **spec.as_kwargs())
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dalip.pooling import POOLERS

__all__ = ["HEAD_FIELDS", "TOWERS", "HeadSpec", "TowerHeads", "per_tower"]

TOWERS = ("image", "text")
"""The two towers of a CLIP model, the keys of every per-tower option."""


def per_tower(value: Any, what: str) -> dict[str, Any]:
    """``x`` or ``{"image": x, "text": y}`` -> ``{"image": ..., "text": ...}``.

    Raises:
        ValueError: a mapping that mixes tower keys with other keys (names ``what``).
    """
    if isinstance(value, Mapping) and value and set(value) <= set(TOWERS):
        return {t: value.get(t) for t in TOWERS}
    if isinstance(value, Mapping) and set(value) & set(TOWERS):
        raise ValueError(f"{what}: mix of per-tower keys and other keys: {sorted(value)}")
    return {t: value for t in TOWERS}


class TowerHeads(NamedTuple):
    """The heads of one tower: its first-order source, second-order pooler (or None) and that pooler's options."""

    first_order: str | None
    second_order: str | None
    second_options: dict[str, Any]


@dataclass(frozen=True)
class HeadSpec:
    """The heads on an open_clip model's towers and how their embeddings combine.

    Attributes:
        first_order: ``"tower"`` (the tower's own pooled output, as in CLIP) or a pooler
            name (``"mean"``, ``"cls"``) on the tokens; one value or ``{"image": ..., "text": ...}``.
        second_order: a pooler name (``"mbdc"``, ``"cov"``, ``"bdc"`` ...) or None for
            plain CLIP; one value or per tower (both towers or neither).
        second_options: the second-order pooler's options, shared or per tower.
        alpha: first-order weight of the combined embedding, in [0, 1].
        separate_second_scale: a second learnable logit scale for the second-order pair.
        alpha_learnable: learn alpha as ``sigmoid(logit)`` starting at ``alpha`` (strictly
            inside (0, 1)); needs second-order heads.
    """

    first_order: str | Mapping[str, str] = "tower"
    second_order: str | None | Mapping[str, str | None] = "mbdc"
    second_options: Mapping[str, Any] = field(default_factory=dict)
    alpha: float = 0.5
    separate_second_scale: bool = False
    alpha_learnable: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> HeadSpec:
        """The head options among ``values`` (a config's ``model`` section, an export's), others ignored."""
        return cls(**{k: values[k] for k in HEAD_FIELDS if k in values})

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of `create_model` / `DALIPModel` (JSON-ready copies)."""
        return {f: getattr(self, f) for f in HEAD_FIELDS}

    def per_tower(self) -> dict[str, TowerHeads]:
        """``{"image": TowerHeads, "text": TowerHeads}``; raises ValueError as `check` does for the shapes
        (a mapping mixing tower keys with others, options that are no mapping)."""
        firsts = per_tower(self.first_order, "first_order")
        seconds = per_tower(self.second_order, "second_order")
        options = per_tower(self.second_options or {}, "second_options")
        for tower in TOWERS:
            if seconds[tower] is not None and options[tower] and not isinstance(options[tower], Mapping):
                raise ValueError(f"second_options: {tower} options must be a mapping, got {options[tower]!r}")
        return {t: TowerHeads(firsts[t], seconds[t], dict(options[t] or {})) for t in TOWERS}

    @property
    def has_second_order(self) -> bool:
        """True when both towers have a second-order head."""
        return all(h.second_order is not None for h in self.per_tower().values())

    def check(self) -> None:
        """Every option valid, without building a model.

        Raises:
            ValueError: the message starts with the option's name (``alpha: ...``,
                ``second_options: ...``), so callers can prefix their own section.
            UnknownComponentError: an unknown pooler (lists the known ones).
        """
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.alpha_learnable and not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha: a learnable alpha starts strictly inside (0, 1) (its logit is trained), "
                             f"got {self.alpha}")
        towers = self.per_tower()
        with_second = [t for t, h in towers.items() if h.second_order is not None]
        if len(with_second) == 1:
            raise ValueError(f"second_order is set for one tower only ({with_second}); set both or neither")
        if self.alpha_learnable and not with_second:
            raise ValueError("alpha_learnable needs second-order heads (alpha weighs first against second order)")
        for tower, heads in towers.items():
            for name in (heads.first_order, heads.second_order):
                if name not in ("tower", None):
                    POOLERS.get(name)  # UnknownComponentError with the known names
            self._check_options(tower, heads)

    @staticmethod
    def _check_options(tower: str, heads: TowerHeads) -> None:
        """Options stay as given when ``second_order`` changes (an override cannot know which ones
        belonged to the old pooler): a pooler that does not take them is an error saying how to clear them."""
        given = heads.second_options
        if heads.second_order is None or not given:
            return
        valid = [p for p in POOLERS.valid_options(heads.second_order) if p != "dim"]
        unknown = sorted(set(given) - set(valid) - {"dim"})
        if unknown:
            raise ValueError(
                f"second_options: pooler {heads.second_order!r} ({tower} tower) does not take {', '.join(unknown)} "
                f"(its options: {', '.join(valid)}). Options written for another pooler? Clear them with "
                f"second_options={{}} or give this pooler's own, e.g. second_options={{{valid[0]}: ...}}"
            )


HEAD_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(HeadSpec))
"""The head option names, in order: the keys a config's ``model`` section and an export share."""

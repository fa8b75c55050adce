"""Which model names a request line may use, and what each resolves to (aliases, ``auto``).

A line's ``model`` is a fleet model, ``auto`` (any generation model of at least a quality
floor) or an alias from ``fleet.yaml`` ``model_aliases`` (a hosted name such as
``gpt-4o-mini`` standing for a fleet model or for ``auto`` with its own floor). Each resolved
target becomes one planning part of the batch, keyed by ``part_key``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from scheduler.domain import Fleet, ModelAlias

AUTO_MODEL = "auto"
EMBEDDINGS = "/v1/embeddings"

# Errors are (code, message, param), as in validate.py.
Err = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a line's model goes: a part key, and the quality floor when it is ``auto``."""

    part_key: str
    floor: float | None = None


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """The fleet's model names by kind, its aliases and its default ``auto`` floor."""

    generate: frozenset[str]
    embed: frozenset[str] = frozenset()
    dimensions_ok: frozenset[str] = frozenset()
    aliases: Mapping[str, ModelAlias] = field(default_factory=dict)
    default_min_quality: float | None = None
    # Per model: the most tokens a request may ask it to generate (fleet.yaml ``max_output_tokens``
    # of the model); models without it are bound by ``bounds.MAX_OUTPUT_TOKENS`` only.
    output_limits: Mapping[str, int] = field(default_factory=dict)
    # Per model: its fleet ``context_tokens`` (models without one are not checked), and the
    # quality of each generation model (which models an ``auto`` floor admits).
    contexts: Mapping[str, int] = field(default_factory=dict)
    qualities: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, fleet: Fleet) -> ModelCatalog:
        """The catalog of ``fleet``."""
        return cls(
            generate=frozenset(m.name for m in fleet.models if not m.embeds),
            embed=frozenset(m.name for m in fleet.models if m.embeds),
            dimensions_ok=frozenset(
                m.name for m in fleet.models if m.embeds and m.extra.get("supports_dimensions")
            ),
            aliases=dict(fleet.model_aliases),
            default_min_quality=fleet.default_min_quality,
            output_limits={
                m.name: int(m.extra["max_output_tokens"])
                for m in fleet.models
                if type(m.extra.get("max_output_tokens")) is int
                and m.extra["max_output_tokens"] > 0
            },
            contexts={m.name: m.context_tokens for m in fleet.models if m.context_tokens},
            qualities={m.name: m.quality for m in fleet.models if not m.embeds},
        )

    @classmethod
    def coerce(cls, models: Collection[str] | ModelCatalog) -> ModelCatalog:
        """A catalog from a catalog, or from plain model names (all generation models)."""
        return models if isinstance(models, ModelCatalog) else cls(generate=frozenset(models))

    def context_of(self, resolved: Resolved) -> tuple[int, tuple[str, ...]] | None:
        """The largest context among the models that may serve ``resolved``, and those models.

        A named model has its own; ``auto`` any generation model meeting its floor. None when
        one of them states no ``context_tokens`` (nothing can be refused for length then).
        """
        if resolved.floor is None:
            names: tuple[str, ...] = (resolved.part_key,)
        else:
            floor = resolved.floor - 1e-12
            names = tuple(sorted(m for m, q in self.qualities.items() if q >= floor))
        sizes = [self.contexts.get(m) for m in names]
        if not sizes or None in sizes:
            return None
        return max(s for s in sizes if s is not None), names

    def names(self, endpoint: str) -> list[str]:
        """Every name a line of ``endpoint`` may use (for error messages)."""
        own = self.embed if endpoint == EMBEDDINGS else self.generate | {AUTO_MODEL}
        usable = [
            a.name
            for a in self.aliases.values()
            if (a.model in self.embed) == (endpoint == EMBEDDINGS)
        ]
        return sorted(own) + sorted(usable)

    def resolve(self, name: str, endpoint: str, min_quality: float | None) -> Resolved | Err:
        """Resolve ``name`` for a line of ``endpoint`` in a batch with ``min_quality``.

        The floor of ``auto`` is the batch's ``min_quality`` if given, else the alias's, else
        the fleet's ``defaults.min_quality``.
        """
        alias = self.aliases.get(name)
        target = alias.model if alias else name
        embeds = endpoint == EMBEDDINGS
        if target == AUTO_MODEL:
            if embeds:
                return (
                    "model_not_found",
                    f"model {name!r} means 'auto', which picks a generation model; "
                    f"/v1/embeddings lines must name an embedding model: {self.names(endpoint)}",
                    "body.model",
                )
            floor = min_quality
            if floor is None and alias is not None:
                floor = alias.min_quality
            if floor is None:
                floor = self.default_min_quality
            if floor is None:
                return (
                    "min_quality_required",
                    f"model {name!r} is 'auto' and needs a quality floor: pass min_quality on "
                    "the batch (extra_body={'min_quality': ...}) or set defaults.min_quality "
                    "in fleet.yaml",
                    "body.model",
                )
            key = AUTO_MODEL if floor == min_quality else f"{AUTO_MODEL}@{floor:g}"
            return Resolved(key, floor)
        if target in (self.embed if embeds else self.generate):
            return Resolved(target)
        if target in self.embed or target in self.generate:
            kind = "an embedding model" if target in self.embed else "a generation model"
            return (
                "model_not_found",
                f"model {name!r} is {kind} and cannot serve {endpoint}; use one of "
                f"{self.names(endpoint)}",
                "body.model",
            )
        return (
            "model_not_found",
            f"model {name[:80]!r} is not in the fleet; use one of {self.names(endpoint)}",
            "body.model",
        )

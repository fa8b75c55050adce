"""Reading and validating ``fleet.yaml`` (planning-formats.md section 1) into a ``Fleet``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from scheduler.domain import (
    CarbonBudget,
    EngineSpec,
    Fleet,
    ModelAlias,
    ModelSpec,
    Objective,
    Pool,
    Profile,
    SignalSource,
    Site,
)
from scheduler.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9-]+$")
ENGINE_KINDS = ("vllm", "openai", "transformers")
MODEL_KINDS = ("generate", "embed")
AUTO = "auto"


def load_fleet(path: str | Path) -> Fleet:
    """Read ``fleet.yaml`` from ``path``.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the contract (message says where).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read fleet file {p}: {e.strerror}") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    return parse_fleet(raw, where=str(p))


def parse_fleet(raw: Any, *, where: str = "fleet") -> Fleet:
    """Build a ``Fleet`` from already-parsed YAML; unknown keys are ignored.

    Raises:
        ConfigError: a required key is missing or a value is out of range.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'sites' and 'models'")
    slot_minutes = _num(raw.get("slot_minutes", 60), f"{where}: slot_minutes", positive=True)
    if int(slot_minutes) != slot_minutes or 1440 % int(slot_minutes):
        raise ConfigError(
            f"{where}: slot_minutes must be a whole divisor of 1440, got {slot_minutes}"
        )
    models = tuple(
        _model(m, f"{where}: models[{i}]") for i, m in enumerate(_list(raw, "models", where))
    )
    sites = tuple(
        _site(s, f"{where}: sites[{i}]") for i, s in enumerate(_list(raw, "sites", where))
    )
    _unique([s.name for s in sites], f"{where}: site names")
    _unique([m.name for m in models], f"{where}: model names")
    gpus = {p.gpu for s in sites for p in s.pools}
    for m in models:
        if not set(m.profiles) & gpus:
            raise ConfigError(
                f"{where}: model {m.name!r} has profiles for {sorted(m.profiles)} but the fleet's "
                f"pools have GPUs {sorted(gpus)}; add a profile for one of them"
            )
    objectives, tolerances = _defaults(raw.get("defaults") or {}, where)
    budget = _budget(raw.get("carbon_budget"), f"{where}: carbon_budget")
    tenants = raw.get("tenants") or {}
    tenant_budgets = {
        str(name): b
        for name, spec in (tenants.items() if isinstance(tenants, Mapping) else [])
        if (b := _budget((spec or {}).get("carbon_budget"), f"{where}: tenants.{name}")) is not None
    }
    default_min_quality = _opt_quality((raw.get("defaults") or {}), models, f"{where}: defaults")
    aliases = _aliases(raw.get("model_aliases"), models, f"{where}: model_aliases")
    return Fleet(
        slot_minutes=int(slot_minutes),
        sites=sites,
        models=models,
        default_objectives=objectives,
        default_tolerances=tolerances,
        carbon_budget=budget,
        tenant_budgets=tenant_budgets,
        model_aliases=aliases,
        default_min_quality=default_min_quality,
    )


def _opt_quality(raw: Mapping[str, Any], models: tuple[ModelSpec, ...], where: str) -> float | None:
    """An optional ``min_quality`` that some generation model must reach."""
    if not isinstance(raw, Mapping) or raw.get("min_quality") is None:
        return None
    q = _num(raw["min_quality"], f"{where}: min_quality")
    best = max((m.quality for m in models if not m.embeds), default=None)
    if best is None or q > best:
        raise ConfigError(
            f"{where}: min_quality {q} is above every generation model (best {best}); lower it"
        )
    return q


def _aliases(raw: Any, models: tuple[ModelSpec, ...], where: str) -> dict[str, ModelAlias]:
    """``model_aliases``: ``{name: model}`` or ``{name: {model, min_quality}}`` (model or auto)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of alias -> model or {{model, min_quality}}"
        )
    names = {m.name for m in models}
    out: dict[str, ModelAlias] = {}
    for name, spec in raw.items():
        w = f"{where}.{name}"
        if not isinstance(name, str) or not name or name == AUTO or name in names:
            raise ConfigError(
                f"{w}: an alias must be a new name (not 'auto' and not a fleet model's name)"
            )
        target = spec.get("model") if isinstance(spec, Mapping) else spec
        if not isinstance(target, str) or (target != AUTO and target not in names):
            raise ConfigError(
                f"{w}: model must be 'auto' or one of the fleet's models {sorted(names)}, "
                f"got {target!r}"
            )
        if isinstance(spec, Mapping) and spec.get("min_quality") is not None and target != AUTO:
            raise ConfigError(f"{w}: min_quality applies only to model 'auto'")
        quality = _opt_quality(spec, models, w) if isinstance(spec, Mapping) else None
        out[name] = ModelAlias(name=name, model=target, min_quality=quality)
    return out


def _list(raw: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list")
    return value


def _num(value: Any, where: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where} must be > 0, got {value}")
    if nonneg and value < 0:
        raise ConfigError(f"{where} must be >= 0, got {value}")
    return float(value)


def _name(raw: Mapping[str, Any], where: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name must match [a-z0-9-]+, got {name!r}")
    return name


def _unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{where}: {n!r} appears twice; names must be unique")
        seen.add(n)


def _opt(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    return None if raw.get(key) is None else _num(raw[key], f"{where}: {key}", nonneg=True)


def _share(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _opt(raw, key, where)
    if value is not None and value > 1:
        raise ConfigError(
            f"{where}: {key} is {value}; give the share of grid energy covered as 0..1 "
            "(e.g. 0.6 for 60 %)"
        )
    return value


def _site(raw: Any, where: str) -> Site:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    name = _name(raw, where)
    where = f"{where} ({name})"
    pools = tuple(
        _pool(p, f"{where}: pools[{i}]") for i, p in enumerate(_list(raw, "pools", where))
    )
    _unique([p.name for p in pools], f"{where}: pool names")
    signals_raw = raw.get("signals") or {}
    signals = {
        str(k): SignalSource(
            provider=str(v.get("provider", "csv")),
            options={kk: vv for kk, vv in v.items() if kk != "provider"},
        )
        for k, v in signals_raw.items()
        if isinstance(v, Mapping)
    }
    return Site(
        name=name,
        pue=_num(raw.get("pue", 1.0), f"{where}: pue", positive=True),
        wue_l_per_kwh=_num(raw.get("wue_l_per_kwh", 0.0), f"{where}: wue_l_per_kwh", nonneg=True),
        ewif_l_per_kwh=_num(
            raw.get("ewif_l_per_kwh", 0.0), f"{where}: ewif_l_per_kwh", nonneg=True
        ),
        pools=pools,
        water_cap_l_per_day=_opt(raw, "water_cap_l_per_day", where),
        grid_cap_kw=_opt(raw, "grid_cap_kw", where),
        market_factor_g_per_kwh=_opt(raw, "market_factor_g_per_kwh", where),
        market_share_covered=_share(raw, "market_share_covered", where),
        residual_mix_g_per_kwh=_opt(raw, "residual_mix_g_per_kwh", where),
        average_carbon_g_per_kwh=_opt(raw, "average_carbon_g_per_kwh", where),
        signals=signals,
    )


def _pool(raw: Any, where: str) -> Pool:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    name = _name(raw, where)
    gpu = raw.get("gpu")
    if not isinstance(gpu, str) or not gpu:
        raise ConfigError(f"{where} ({name}): 'gpu' must name a GPU type, e.g. H100")
    count = raw.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"{where} ({name}): 'count' must be a whole number >= 1, got {count!r}")
    engine_raw = raw.get("engine") or {"kind": "vllm"}
    kind = engine_raw.get("kind", "vllm") if isinstance(engine_raw, Mapping) else None
    if kind not in ENGINE_KINDS:
        raise ConfigError(
            f"{where} ({name}): engine.kind must be one of {ENGINE_KINDS}, got {kind!r}"
        )
    return Pool(
        name=name,
        gpu=gpu,
        count=count,
        embodied_g_per_gpu_hour=_num(
            raw.get("embodied_g_per_gpu_hour", 0.0),
            f"{where}: embodied_g_per_gpu_hour",
            nonneg=True,
        ),
        engine=EngineSpec(kind=kind, options={k: v for k, v in engine_raw.items() if k != "kind"}),
    )


def _model(raw: Any, where: str) -> ModelSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: every model needs a non-empty 'name'")
    where = f"{where} ({name})"
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, Mapping) or not profiles_raw:
        raise ConfigError(f"{where}: 'profiles' must map GPU types to throughput and power")
    profiles = {}
    for gpu, pr in profiles_raw.items():
        w = f"{where}: profiles.{gpu}"
        if not isinstance(pr, Mapping):
            raise ConfigError(f"{w}: expected a mapping")
        gpus = pr.get("gpus", 1)
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
            raise ConfigError(f"{w}: gpus must be a whole number >= 1")
        profiles[str(gpu)] = Profile(
            gpus=gpus,
            prefill_tok_s=_num(pr.get("prefill_tok_s"), f"{w}.prefill_tok_s", positive=True),
            decode_tok_s=_num(pr.get("decode_tok_s"), f"{w}.decode_tok_s", positive=True),
            power_w=_num(pr.get("power_w"), f"{w}.power_w", nonneg=True),
        )
    known = {
        "name",
        "quality",
        "profiles",
        "weights",
        "expected_output_fraction",
        "kind",
        "context_tokens",
    }
    kind = raw.get("kind", "generate")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{where}: kind must be one of {MODEL_KINDS}, got {kind!r}")
    _tool_keys(raw, where)
    return ModelSpec(
        kind=kind,
        name=name,
        quality=_num(raw.get("quality", 0.0), f"{where}: quality"),
        profiles=profiles,
        weights=raw.get("weights"),
        expected_output_fraction=_num(
            raw.get("expected_output_fraction", 0.6),
            f"{where}: expected_output_fraction",
            nonneg=True,
        ),
        extra={k: v for k, v in raw.items() if k not in known},
        context_tokens=_context(raw.get("context_tokens"), where),
    )


def _context(value: Any, where: str) -> int | None:
    """A model's optional ``context_tokens``: a whole number of tokens (at least 16)."""
    if value is None:
        return None
    if type(value) is not int or value < 16:
        raise ConfigError(
            f"{where}: context_tokens must be a whole number of tokens (at least 16), the "
            f"context its engines load (e.g. vLLM's max_model_len), got {value!r}"
        )
    return value


def _tool_keys(raw: Mapping[str, Any], where: str) -> None:
    """``tool_call_parser`` (a vLLM tool parser's name) and ``enable_auto_tool_choice``."""
    parser = raw.get("tool_call_parser")
    if parser is not None and (not isinstance(parser, str) or not parser):
        raise ConfigError(f"{where}: tool_call_parser must name a vLLM tool parser, e.g. hermes")
    auto = raw.get("enable_auto_tool_choice")
    if auto is not None and not isinstance(auto, bool):
        raise ConfigError(f"{where}: enable_auto_tool_choice must be true or false")
    if auto and parser is None:
        raise ConfigError(
            f"{where}: enable_auto_tool_choice needs a tool_call_parser (e.g. hermes)"
        )


def _defaults(
    raw: Mapping[str, Any], where: str
) -> tuple[tuple[Objective, ...], tuple[float, ...]]:
    objectives = tuple(parse_objectives(raw.get("objectives", ["carbon", "cost", "delay"]), where))
    tol_raw = raw.get("tolerances", [0.01] + [0.0] * (len(objectives) - 1))
    tolerances = tuple(_num(t, f"{where}: defaults.tolerances", nonneg=True) for t in tol_raw)
    if len(tolerances) != len(objectives):
        raise ConfigError(f"{where}: defaults.tolerances needs one value per objective")
    return objectives, tolerances


def parse_objectives(raw: Any, where: str = "objectives") -> list[Objective]:
    """Parse an objective order (list or comma-separated string); each at most once.

    Raises:
        ConfigError: an unknown or repeated objective.
    """
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    out: list[Objective] = []
    for item in items:
        try:
            obj = Objective(str(item).strip().lower())
        except ValueError:
            allowed = ", ".join(o.value for o in Objective)
            raise ConfigError(f"{where}: unknown objective {item!r}; use {allowed}") from None
        if obj in out:
            raise ConfigError(f"{where}: objective {obj.value!r} appears twice")
        out.append(obj)
    if not out:
        raise ConfigError(f"{where}: at least one objective is needed")
    return out


def _budget(raw: Any, where: str) -> CarbonBudget | None:
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with g_per_day and/or g_per_month")
    return CarbonBudget(
        g_per_day=_opt(raw, "g_per_day", where), g_per_month=_opt(raw, "g_per_month", where)
    )

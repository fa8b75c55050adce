"""OpenAI ``/v1/models``: the fleet's models and its aliases (what a request line may name)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from scheduler.api.deps import FleetDep, TenantDep
from scheduler.domain import Fleet
from scheduler.errors import ConfigError, NotFound
from scheduler.store.paging import storable

router = APIRouter(prefix="/v1", tags=["models"])

OWNED_BY = "gridshift"
# Models exist as long as the fleet file says so; a fixed stamp keeps the answer deterministic.
CREATED = 0


class Model(BaseModel):
    """OpenAI ``model`` object plus ``gridshift`` (kind, quality, endpoints, alias target)."""

    id: str
    object: str = "model"
    created: int = CREATED
    owned_by: str = OWNED_BY
    gridshift: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    """OpenAI's list of models."""

    object: str = "list"
    data: list[Model]


def _endpoints(embeds: bool) -> list[str]:
    if embeds:
        return ["/v1/embeddings"]
    return ["/v1/chat/completions", "/v1/completions", "/v1/responses"]


def fleet_models(fleet: Fleet) -> list[Model]:
    """Fleet models in file order, then ``auto``, then aliases in file order."""
    out = [
        Model(
            id=m.name,
            gridshift={
                "kind": m.kind,
                "quality": m.quality,
                "endpoints": _endpoints(m.embeds),
                "gpus": sorted(m.profiles),
            },
        )
        for m in fleet.models
    ]
    out.append(
        Model(
            id="auto",
            gridshift={
                "kind": "generate",
                "alias_of": "auto",
                "min_quality": fleet.default_min_quality,
                "endpoints": _endpoints(False),
                "note": "the planner picks a generation model of at least min_quality",
            },
        )
    )
    kinds = {m.name: m.embeds for m in fleet.models}
    for a in fleet.model_aliases.values():
        embeds = kinds.get(a.model, False)
        out.append(
            Model(
                id=a.name,
                gridshift={
                    "kind": "embed" if embeds else "generate",
                    "alias_of": a.model,
                    "min_quality": a.min_quality,
                    "endpoints": _endpoints(embeds),
                },
            )
        )
    return out


def _fleet(fleet: Fleet | None) -> Fleet:
    if fleet is None:
        raise ConfigError("no fleet is configured: set GRIDSHIFT_FLEET to a fleet.yaml")
    return fleet


@router.get("/models")
def list_models(_caller: TenantDep, fleet: FleetDep) -> ModelList:
    """Every name a request line may use: fleet models, ``auto`` and the aliases."""
    return ModelList(data=fleet_models(_fleet(fleet)))


@router.get("/models/{model_id:path}")
def retrieve_model(_caller: TenantDep, fleet: FleetDep, model_id: str) -> Model:
    """One model or alias by name (names may contain ``/``, as hub ids do)."""
    for m in fleet_models(_fleet(fleet)):
        if m.id == model_id:
            return m
    shown = model_id[:80] if storable(model_id) else "?"
    raise NotFound(f"no model {shown!r}: list the models with GET /v1/models")

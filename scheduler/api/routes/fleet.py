"""``GET /v1/fleet`` (admin): the sites, pools and models the planner uses."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder

from scheduler.api.deps import AdminDep, FleetDep
from scheduler.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["fleet"])


@router.get("/fleet")
def get_fleet(_admin: AdminDep, fleet: FleetDep) -> dict[str, Any]:
    """The loaded fleet as JSON (``object: "fleet"``).

    Raises:
        ConfigError: no fleet is configured (503).
    """
    if fleet is None:
        raise ConfigError("no fleet is configured: set GRIDSHIFT_FLEET to a fleet.yaml")
    out: dict[str, Any] = jsonable_encoder(dataclasses.asdict(fleet))
    return {"object": "fleet", **out}

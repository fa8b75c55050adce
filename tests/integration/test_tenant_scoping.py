"""Every GET route, walked with two tenants' keys: no answer names another tenant's batch.

The seeded plans also carry per-batch baselines and unplaced entries of every tenant (what the
planner stores), so the plan endpoints are exercised on the data that used to leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from clock_pin import pinned_clock
from conftest import PG_ADMIN_URL, _create_pg_database, _drop_pg_database
from fastapi.testclient import TestClient
from review_seed import Seeded, seed_review_store
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.api.app import create_app
from scheduler.config import Settings
from scheduler.store.db import make_engine, session_factory
from scheduler.store.migrate import upgrade
from scheduler.store.tables import PlanRecord

pytestmark = pytest.mark.integration

# Routes outside the tenant API: static assets and the Prometheus scrape (fleet aggregates only).
NOT_TENANT_DATA = re.compile(r"^/(dashboard|openapi\.json|docs|redoc)")
# Fleet-wide routes that only admin keys may read (a tenant key gets 403).
ADMIN_ONLY = {"/v1/fleet", "/v1/workers", "/v1/admin/keys", "/v1/webhook_endpoints"}


def _pg_url() -> Iterator[str]:
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _drop_pg_database(name)


def _per_batch_plan_details(sessions: sessionmaker[Session], seeded: Seeded) -> None:
    """Give every stored plan per-batch baselines and unplaced entries of every tenant."""
    per_batch = {b: {"co2_g": 1.0, "cost": 0.1, "water_l": 0.01} for b in seeded.batch_tenant}
    with sessions() as s, s.begin():
        for plan in s.scalars(select(PlanRecord)):
            plan.baselines = {
                name: {**raw, "batches": dict(per_batch)} for name, raw in plan.baselines.items()
            }
            plan.unplaced = [{"batch": b, "reason": "deadline"} for b in seeded.batch_tenant]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Seeded]]:
    tmp: Path = tmp_path_factory.mktemp("scope")
    pg = _pg_url() if request.param == "postgresql" else None
    url = next(pg) if pg else f"sqlite:///{tmp / 'gs.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    with pinned_clock() as now:  # the seed and every request of the module on one clock
        seeded = seed_review_store(sessions, now=now)
        _per_batch_plan_details(sessions, seeded)
        app = create_app(Settings(data_dir=tmp / "data", database_url=url))
        with TestClient(app) as client:
            yield client, seeded
    engine.dispose()
    if pg:
        next(pg, None)


def _get_paths(client: TestClient, ids: list[str]) -> list[str]:
    """Every GET path of the app, each path parameter filled with each of ``ids``."""
    paths: list[str] = []
    schema = client.get("/openapi.json").json()
    for route, operations in schema["paths"].items():
        if "get" not in operations or NOT_TENANT_DATA.match(route):
            continue
        params = re.findall(r"{(\w+)}", route)
        if not params:
            paths.append(route)
            continue
        for value in ids:
            path = route
            for p in params:
                path = path.replace("{" + p + "}", value)
            paths.append(path)
    return paths


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_no_tenant_key_sees_another_tenants_batch_id_on_any_route(
    served: tuple[TestClient, Seeded], tenant: str
) -> None:
    client, seeded = served
    own = sorted(b for b, t in seeded.batch_tenant.items() if t == tenant)
    foreign = sorted(b for b, t in seeded.batch_tenant.items() if t != tenant)
    assert own and foreign
    headers = {"Authorization": f"Bearer {seeded.keys[tenant]}"}
    paths = _get_paths(client, own[:1] + foreign[:2])
    plain_routes = set(_get_paths(client, []))
    assert any(p.startswith("/v1/plans") for p in paths)
    statuses: dict[str, int] = {}
    # When the tenant walks every route (its own ids and foreign ones in the path)
    for path in paths:
        response = client.get(path, headers=headers)
        statuses[path] = response.status_code
        # Then nothing is a server error, and no answer names a foreign batch
        assert response.status_code < 500, (path, response.text[:300])
        # (a 404 may echo the id the caller itself put in the path: that is no leak)
        echo = path if response.status_code == 404 else ""
        leaked = [b for b in foreign if b in response.text and b not in echo]
        assert not leaked, f"{path} shows {tenant} the batches {leaked[:3]}"
    # And the walk reached real answers, not only refusals: every route without a path
    # parameter answers (admin-only ones refuse with 403), and so does every route about the
    # tenant's own batch
    plain = {p: c for p, c in statuses.items() if p in plain_routes}
    assert plain and all(c == 200 or p in ADMIN_ONLY and c == 403 for p, c in plain.items()), plain
    mine = {p: c for p, c in statuses.items() if p.startswith(f"/v1/batches/{own[0]}")}
    assert mine and all(c == 200 for c in mine.values()), mine


def test_admin_key_sees_fleet_wide_plan_details(served: tuple[TestClient, Seeded]) -> None:
    client, seeded = served
    admin = {"Authorization": f"Bearer {seeded.admin_key}"}
    tenant = {"Authorization": f"Bearer {seeded.keys['acme']}"}
    # When an admin and a tenant read the plan versions
    fleet = client.get("/v1/plans", headers=admin).json()["data"][0]
    mine = client.get("/v1/plans", headers=tenant).json()["data"][0]
    # Then the admin sees every batch, totals and unplaced entry
    assert set(fleet["baselines"]["asap"]["batches"]) == set(seeded.batch_tenant)
    assert len(fleet["unplaced"]) == len(seeded.batch_tenant) and fleet["totals"]
    # and the tenant only its own, without the fleet-wide totals
    acme = {b for b, t in seeded.batch_tenant.items() if t == "acme"}
    assert set(mine["baselines"]["asap"]["batches"]) == acme
    assert {u["batch"] for u in mine["unplaced"]} == acme
    assert mine["totals"] == {}


def test_an_admin_key_of_another_tenant_lists_the_fleets_batches(
    served: tuple[TestClient, Seeded],
) -> None:
    client, seeded = served
    admin = {"Authorization": f"Bearer {seeded.admin_key}"}  # tenant "ops": no batch of its own
    tenant = {"Authorization": f"Bearer {seeded.keys['acme']}"}
    # When the admin lists batches as the OpenAI API does, then the fleet
    own = client.get("/v1/batches", params={"limit": 100}, headers=admin)
    fleet = client.get("/v1/batches", params={"limit": 100, "all_tenants": "true"}, headers=admin)
    # Then the OpenAI listing stays the key's tenant's, and the fleet listing has every batch
    assert own.status_code == 200 and own.json()["data"] == []
    assert fleet.status_code == 200, fleet.text
    rows = fleet.json()["data"]
    assert {b["id"]: b["gridshift"]["tenant"] for b in rows} == seeded.batch_tenant
    assert not any(b["gridshift"]["own"] for b in rows)
    # and a tenant key asking for the fleet is refused, saying why, not silently narrowed
    refused = client.get("/v1/batches", params={"all_tenants": "true"}, headers=tenant)
    assert refused.status_code == 403
    assert "admin key" in refused.json()["error"]["message"]

"""Self-calibrating profiles: observed against configured, and the profile the planner may use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from execution_helpers import T0, chat_line, make_harness, run_planned_slots
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from scheduler.cli import build_app
from scheduler.config import Settings
from scheduler.domain import Profile
from scheduler.optimizer.calibration import (
    MIN_ATTEMPTS,
    Observed,
    calibrate,
    calibrated_fleet,
    calibrations,
)
from scheduler.optimizer.pricing import energy_from_tokens
from scheduler.samples import load_sample_fleet
from scheduler.store.profiles import observed_profiles
from workers.energy import meter_for_pool
from workers.engines.echo import EchoEngine

PROFILE = Profile(gpus=1, prefill_tok_s=100.0, decode_tok_s=10.0, power_w=100.0)


def test_twice_as_slow_and_three_times_the_energy_calibrates_throughput_and_power() -> None:
    # Given 1000 tokens in and 100 out: the profile says 10 s + 10 s at 100 W (2,000 J)
    configured = energy_from_tokens(PROFILE, 1.0, 1000, 100)
    assert configured.it_kwh * 3.6e6 == pytest.approx(2000.0)
    # When workers took 40 s of busy time and measured 6,000 J over three attempts
    obs = Observed(
        attempts=3,
        input_tokens=1000,
        output_tokens=100,
        busy_s=40.0,
        measured_attempts=3,
        measured_input_tokens=1000,
        measured_output_tokens=100,
        measured_it_kwh=6000.0 / 3.6e6,
    )
    c = calibrate("m", "H100", PROFILE, obs)
    # Then time runs 2x and energy 3x the profile's
    assert (c.time_ratio, c.energy_ratio) == pytest.approx((2.0, 3.0))
    assert c.observed_j_per_token == pytest.approx(6000.0 / 1100)
    # and the calibrated profile halves the throughputs and prices the tokens at what was measured
    assert (c.calibrated.prefill_tok_s, c.calibrated.decode_tok_s) == pytest.approx((50.0, 5.0))
    recalc = energy_from_tokens(c.calibrated, 1.0, 1000, 100)
    assert recalc.it_kwh * 3.6e6 == pytest.approx(6000.0)
    assert recalc.gpu_hours * 3600 == pytest.approx(40.0)


def test_too_few_attempts_leave_the_profile_as_configured() -> None:
    obs = Observed(attempts=MIN_ATTEMPTS - 1, input_tokens=1000, output_tokens=100, busy_s=40.0)
    c = calibrate("m", "H100", PROFILE, obs)
    assert c.time_ratio == pytest.approx(2.0)
    assert not c.enough and c.calibrated == PROFILE
    assert c.energy_ratio is None  # nothing measured: estimates are the profile by definition


def test_workers_observations_reach_the_profiles_command_and_the_fleet(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    # Given a few shards run by the worker runtime (estimated energy, real busy time)
    h = make_harness(
        Settings(
            data_dir=settings.data_dir,
            database_url=settings.database_url,
            max_shard_requests=1,
        ),
        sessions,
        tmp_path,
        engine_factory=lambda config: EchoEngine(),
    )
    h.runtime.meter_factory = lambda site, pool, model: meter_for_pool(pool, model, prefer=())
    batch_id = h.submit([chat_line(f"r{i}", "one two three") for i in range(4)], tmp=tmp_path)
    assert run_planned_slots(h, batch_id) == "completed"
    fleet = load_sample_fleet()
    # When the ledger is read for what workers observed
    with h.sessions() as s:
        observed = observed_profiles(s, fleet)
    found = calibrations(fleet, observed)
    # Then every attempt counts for its (model, GPU type), with its tokens and busy time
    assert found and all(c.observed.attempts >= 1 and c.observed.busy_s >= 0 for c in found)
    assert sum(c.observed.attempts for c in found) >= 1
    # and the fleet changes only where there is enough evidence
    calibrated = calibrated_fleet(fleet, found)
    for c in found:
        profile = next(m for m in calibrated.models if m.name == c.model).profiles[c.gpu]
        assert profile == (c.calibrated if c.enough else c.configured)
    # and `gridshift profiles --json` shows the same comparison from the store
    monkeypatch.setenv("GRIDSHIFT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GRIDSHIFT_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("GRIDSHIFT_FLEET", raising=False)
    result = CliRunner().invoke(build_app(), ["profiles", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["calibrated_profiles_in_use"] is False
    assert [(p["model"], p["gpu"], p["attempts"]) for p in body["profiles"]] == [
        (c.model, c.gpu, c.observed.attempts) for c in found
    ]


def test_the_planner_uses_calibrated_profiles_only_when_asked(
    tmp_path: Path, sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Given three measured attempts of tiny-chat on es-madrid's CPU pool, 4x slower than profiled
    from datetime import timedelta

    from scheduler.dispatch.replan import build_problem
    from scheduler.store.db import transaction
    from scheduler.store.tables import LedgerEntry

    fleet = load_sample_fleet()
    profile = fleet.model("tiny-chat").profiles["CPU"]
    tokens_in, tokens_out = 2000, 120  # 1 s + 1 s on the profile
    with transaction(sessions) as s:
        for i in range(MIN_ATTEMPTS):
            start = T0 - timedelta(hours=3, minutes=10 * i)
            s.add(
                LedgerEntry(
                    batch_id="b-old", shard_id=f"sh{i}", attempt=1, tenant_id="t",
                    site="es-madrid", pool="cpu", model="tiny-chat", started_at=start,
                    ended_at=start + timedelta(seconds=8), requests_done=1, requests_failed=0,
                    input_tokens=tokens_in, output_tokens=tokens_out, gpu_hours=8 / 3600,
                    it_energy_kwh=8 * 40.0 / 3.6e6, facility_energy_kwh=8 * 40.0 / 3.6e6,
                    energy_method="measured-rapl", renewable_share=0.0, grid_kwh=0.0,
                    carbon_g_per_kwh=100.0, carbon_source="actual", co2_location_g=0.0,
                    co2_market_g=None, embodied_co2_g=0.0, water_onsite_l=0.0,
                    water_offsite_l=0.0, cost=0.0, created_at=start,
                )
            )  # fmt: skip
    h = make_harness(settings, sessions, tmp_path, engine_factory=lambda config: EchoEngine())
    h.submit([chat_line("r0")], tmp=tmp_path)
    # When the service builds a planning problem with calibration off, then on
    with sessions() as s:
        off, _, _ = build_problem(s, settings, fleet, T0, h.signals_for)
        on_settings = settings.model_copy(update={"calibrated_profiles": True})
        on, _, _ = build_problem(s, on_settings, fleet, T0, h.signals_for)
    assert off is not None and on is not None
    # Then only the opt-in plan prices tiny-chat on CPU with what the workers measured
    assert off.fleet.model("tiny-chat").profiles["CPU"] == profile
    calibrated = on.fleet.model("tiny-chat").profiles["CPU"]
    assert calibrated.prefill_tok_s == pytest.approx(profile.prefill_tok_s / 4)
    assert calibrated.decode_tok_s == pytest.approx(profile.decode_tok_s / 4)
    assert calibrated.power_w == pytest.approx(40.0)

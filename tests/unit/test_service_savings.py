"""The service stores per-batch baselines and the savings view shows them per batch."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from execution_helpers import T0, chat_line, make_harness
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import Settings
from scheduler.review.savings import savings_view
from scheduler.store.tables import Batch, PlanRecord, Shard


def test_a_real_replan_stores_per_batch_baselines_and_savings_shows_them_per_batch(
    tmp_path: Path, sessions: sessionmaker[Session], tiny_model_dir: Path
) -> None:
    # Given a batch naming two models (two planning parts) and a second batch, submitted
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'gs.db'}")
    h = make_harness(settings, sessions, tiny_model_dir)
    mixed = [chat_line("a0"), chat_line("a1", model="tiny-chat-mini"), chat_line("a2")]
    first = h.submit(mixed, tmp=tmp_path)
    second = h.submit([chat_line("b0"), chat_line("b1")], tmp=tmp_path)
    # When the dispatcher re-plans and the shards run to the end
    now = T0
    h.tick(now)
    for _ in range(12):
        h.tick(now, allow_replan=False)
        h.drain(now)
        with h.sessions() as s:
            nxt = s.scalar(select(func.min(Shard.slot_start)).where(Shard.status == "planned"))
        if nxt is None:
            break
        now = max(now, nxt)
    # Then the plan stores per-batch baselines keyed by OpenAI batch id, adding up to the totals
    with h.sessions() as s:
        assert {s.get(Batch, b).status for b in (first, second)} == {"completed"}  # type: ignore[union-attr]
        plan = s.scalars(select(PlanRecord).order_by(PlanRecord.id)).first()
        assert plan is not None
        for name in ("asap", "carbon_greedy"):
            per_batch = plan.baselines[name]["batches"]
            assert set(per_batch) == {first, second}
            for key in ("co2_g", "cost", "water_l", "delay_h"):
                total = plan.baselines[name][key]
                assert sum(b[key] for b in per_batch.values()) == pytest.approx(
                    total, rel=5e-3, abs=1e-9
                )
        # and the savings view returns a per-batch row with both baselines for each batch
        view = savings_view(s, T0 - timedelta(days=1), now + timedelta(days=2))
        realised = savings_view(s, T0 - timedelta(days=1), now + timedelta(days=2), fleet=h.fleet)
    # and with the fleet the realised saving is split: by place and time is the like-for-like
    # saving on the model each row ran; both batches named their models, so no model choice
    for r in [*realised.per_batch, *realised.per_day]:
        assert r.saved_co2_g_by_place_and_time == pytest.approx(r.saved_co2_g_vs_asap, abs=1e-12)
        assert r.saved_co2_g_by_model_choice == 0.0
    assert all(r.saved_co2_g_by_model_choice is None for r in view.per_batch)  # no fleet
    rows = {r.key: r for r in view.per_batch}
    assert set(rows) == {first, second}
    for r in rows.values():
        assert r.asap is not None and r.carbon_greedy is not None
        assert r.asap.co2_g > 0 and r.carbon_greedy.co2_g > 0
        assert r.actual.co2_g > 0

"""`fe bench scale` builds what it says: every server it asks for exists (their system
volumes within quota, ECS-3, TEN-3), and its report says so."""

from __future__ import annotations

from sim.bench import scale


def test_scale_bench_creates_every_server_it_asks_for() -> None:
    result = scale(hosts=30, servers=450, days=1.0, seed=1, console=None)
    assert result["expect_servers.total"] and result["expect_quota_rejections"]
    assert result["servers_running"] + result["servers_lost"] <= 450
    assert result["servers_running"] >= 440  # a day of SimEDC failures may hold a few down

"""bench/bench_sweep.py: its fixed scene list has what the registration issue asks of it, and its verdicts apply
the issue's targets (a full run takes about half an hour: docs/registration.md)."""

from __future__ import annotations

from aerialmd.sample_scene.family import family_config
from tests.helpers import script_module


def bench_sweep():
    return script_module("bench/bench_sweep.py")


def test_sweep_has_both_layouts_the_gap_on_and_off_and_larger_scenes():
    sweep = bench_sweep().SWEEP
    configs = [family_config(*scene) for scene in sweep]
    assert len(sweep) >= 12 and len({c.scene_id for c in configs}) == len(sweep)
    assert sum(gap for *_, gap in sweep) >= 6 and sum(not gap for *_, gap in sweep) >= 1
    assert sum(c.ground_spots == 0 for c in configs) >= 4 and any(c.ground_spots > 0 for c in configs)
    assert {size for _, size, _, _ in sweep} >= {"small", "large"}


def row(registered: int, total: int, rotation: float = 0.05, position: float = 0.0005, scale: float = 1.001) -> dict:
    images = {f"{k}.jpg": {"rotation_deg": rotation, "position_fraction": position} for k in range(registered)}
    return {"accuracy": {"registered": registered, "total": total, "images": images, "scale": scale}}


def test_verdicts_apply_the_registration_issue_targets():
    verdicts = bench_sweep().verdicts
    assert all(met for _, _, met in verdicts([row(19, 20), row(20, 20), row(20, 20)]))
    low = {what: met for what, _, met in verdicts([row(15, 20), row(20, 20), row(20, 20)])}
    assert not low["every scene registers >= 80 % of its photos"] and low["median scene registers >= 95 %"]
    off = {what: met for what, _, met in verdicts([row(20, 20, rotation=2.5), row(20, 20, scale=1.006)])}
    assert not off["no kept photo worse than 2 deg"] and not off["pooled median rotation <= 0.3 deg"]
    assert not off["scale within 0.5 % in every scene"] and off["no kept photo worse than 1 % of extent"]
    failed = {what: met for what, _, met in verdicts([row(20, 20), {"failed": True}])}
    assert not failed["no scene failed"] and not failed["every scene registers >= 80 % of its photos"]


def dense_row(coverage: float = 0.75, ceiling: float = 0.9, within: float = 0.95, off: float = 0.01,
              sky: int = 10, raw_sky: int = 500, raw_coverage: float = 0.76) -> dict:
    kind = {"images": 10, "coverage": coverage, "ceiling": ceiling, "within_2pct": within, "off_10pct": off,
            "on_sky": sky, "produced": 10000, "raw": {"coverage": raw_coverage, "on_sky": raw_sky, "produced": 10500}}
    return {"scene": "s", "dense": {"aerial": kind, "ground": kind}}


def test_dense_verdicts_apply_the_dense_issue_targets_and_the_cleaning_rule():
    verdicts = bench_sweep().dense_verdicts
    assert all(met for _, _, met in verdicts([dense_row(), dense_row(coverage=0.40, ceiling=0.44, raw_coverage=0.41)]))
    short = {what: met for what, _, met in verdicts([dense_row(), dense_row(coverage=0.38, ceiling=0.44)])}
    assert not short["ground: coverage >= min(0.70, 0.9 ceiling)"] and short["ground: < 3 % off by > 10 %"]
    wrong = {what: met for what, _, met in verdicts([dense_row(within=0.85, off=0.031)])}
    assert not wrong["aerial: >= 90 % within 2 %"] and not wrong["aerial: < 3 % off by > 10 %"]
    sky = {what: met for what, _, met in verdicts([dense_row(sky=25, raw_coverage=0.78)])}
    assert not sky["ground: cleaning leaves < 0.2 % on sky"] and not sky["ground: cleaning costs < 2 coverage points"]
    assert {what for what, _, _ in verdicts([{"scene": "s", "failed": True}])} == set()


def test_pooled_dense_figures_weigh_every_pixel_of_every_scene_alike():
    """Coverage pooled over scenes is all covered pixels over all true-valid ones (not the mean of the scenes'
    coverages: 0.35 here, not 0.5), the shares are weighted by the depths produced, the wrong depths' classes summed."""
    def scene(true_valid: int, covered: int, within: float, off: float, classes: tuple[int, int, int, int]) -> dict:
        wrong = dict(zip(("silhouette", "grazing", "other", "too_near"), classes))
        return {"dense": {"aerial": {"true_valid": true_valid, "covered": covered, "within_2pct": within,
                                     "off_10pct": off, "wrong_by_class": wrong}}}
    pooled = bench_sweep().pooled_dense([scene(1000, 800, 0.9, 0.05, (30, 5, 5, 20)),
                                         scene(3000, 600, 0.8, 0.1, (40, 10, 10, 50))], "aerial")
    assert abs(pooled["coverage"] - 0.35) < 1e-12
    assert abs(pooled["within_2pct"] - 1200 / 1400) < 1e-12 and abs(pooled["off_10pct"] - 100 / 1400) < 1e-12
    assert pooled["wrong_by_class"] == {"silhouette": 70, "grazing": 15, "other": 15, "too_near": 70}

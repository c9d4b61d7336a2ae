"""The ledger of the paper's claims: verdict rules on made-up numbers, the plan of runs, resumable
storage (skips what is stored, names a damaged file), and the smoke ledger end to end on the digits."""

import json

import pytest

from sela_edu.course.ledger import claims as ledger
from sela_edu.course.ledger.claims import (CLAIMS, DOES_NOT, NOT_RUN, REPRODUCES, WITHIN, Beats, Close, InRange,
                                    claims_for, format_table, judge, ledger_rows)
from sela_edu.course.ledger.runs import PROFILES, plan, setting_specs
from sela_edu.course.ledger.store import LedgerFileError, read_result, result_path, run_ledger, write_result

SMOKE = PROFILES["smoke"]


# ---------------------------------------------------------------- verdict rules

@pytest.mark.parametrize("a, b, verdict", [
    ([80.0, 81.0, 82.0], [70.0, 71.0, 72.0], REPRODUCES),     # ahead by 10, spread 2
    ([70.0, 71.0, 72.0], [80.0, 81.0, 82.0], DOES_NOT),       # behind by 10
    ([80.0, 81.0, 82.0], [80.0, 80.5, 81.0], WITHIN),         # ahead by 0.5, spread 1.5
])
def test_beats_gives_each_verdict(a, b, verdict):
    assert Beats("a", "b", "linear").judge({"a": a, "b": b}).verdict == verdict


def test_beats_lower_is_better_for_times():
    fast, slow = [0.1, 0.11], [1.0, 1.1]
    assert Beats("fast", "slow", "seconds_kit", lower_is_better=True).judge(
        {"fast": fast, "slow": slow}).verdict == REPRODUCES
    assert Beats("slow", "fast", "seconds_kit", lower_is_better=True).judge(
        {"fast": fast, "slow": slow}).verdict == DOES_NOT


@pytest.mark.parametrize("a, verdict", [
    ([79.5, 79.6], REPRODUCES),     # 0.35 below: within the tolerance of 1
    ([78.7, 78.8], WITHIN),         # 1.15 below: misses by 0.15, spread 0.14 + 0.07
    ([75.0, 75.1], DOES_NOT),       # 4.85 below
    ([81.0, 81.1], REPRODUCES),     # above: one-sided, being better is fine
])
def test_close_gives_each_verdict(a, verdict):
    b = [79.8, 80.0]
    rule = Close("a", "b", "linear", tolerance=1.0, two_sided=False)
    assert rule.judge({"a": a, "b": b}).verdict == verdict


def test_close_two_sided_refuses_a_large_gain():
    assert Close("a", "b", "linear", tolerance=1.0).judge({"a": [85.0, 85.1], "b": [79.8, 80.0]}).verdict == DOES_NOT


@pytest.mark.parametrize("values, verdict", [
    ([1.0, 1.02, 0.98], REPRODUCES),   # mean 1.0 inside [0.75, 1.25]
    ([0.65, 0.79], WITHIN),            # mean 0.72 misses 0.75 by 0.03, std 0.099
    ([0.4, 0.41], DOES_NOT),           # mean 0.405 misses by 0.345, std 0.007
])
def test_in_range_gives_each_verdict(values, verdict):
    assert InRange("t", "slope_n", 0.75, 1.25).judge({"t": values}).verdict == verdict


def test_a_claim_without_results_is_not_run():
    claim = claims_for(["2a"])[0]
    assert judge(claim, {}).verdict == NOT_RUN


def test_claims_for_selects_by_number_and_names_unknown_ids():
    assert [c.id for c in claims_for(["2"])] == ["2a", "2b", "2c"]
    assert [c.id for c in claims_for(["2b"])] == ["2b"]
    assert [c.id for c in claims_for(["13"])] == ["13a", "13b"]
    with pytest.raises(ValueError, match="'15'"):
        claims_for(["15"])


def test_every_issue_claim_is_in_the_ledger_with_its_paper_figure():
    assert {c.number for c in CLAIMS} == set(range(1, 15))   # the paper's 1-9, its successors' 10-14
    assert all(c.paper and c.source and c.measure in ledger.MEASURES for c in CLAIMS)


# ---------------------------------------------------------------- the plan

def test_plan_runs_shared_settings_once_and_sources_first():
    runs = plan(SMOKE)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    assert names.count("sela_s0") == 1 and {r.seed for r in runs} == set(SMOKE.seeds)
    assert names.index("sela_s0") < names.index("transfer_s0")
    only_7 = [r.name for r in plan(SMOKE, claims_for(["7"]))]
    assert only_7 == [f"sela_s{s}" for s in SMOKE.seeds] + [f"transfer_s{s}" for s in SMOKE.seeds]


def test_every_claimed_setting_is_defined():
    specs = setting_specs(SMOKE)
    for claim in CLAIMS:
        assert all(s in specs or s == "timing-reference" for s in claim.settings), claim.id


# ---------------------------------------------------------------- storage and resuming

def _fake_runner(calls):
    def runner(run, context):
        calls.append(run.name)
        value = 80.0 + (run.setting.name == "sela") + 0.1 * run.seed
        return {"measures": {"knn": value, "linear": value, "nmi": 0.5}}
    return runner


def test_resume_skips_stored_runs(tmp_path):
    calls = []
    first = run_ledger(SMOKE, tmp_path, only=["2"], runner=_fake_runner(calls), progress=False, log=lambda s: None)
    assert sorted(calls) == sorted(first) == sorted(f"{s}_s{i}" for s in ("sela", "kmeans") for i in SMOKE.seeds)
    calls.clear()
    again = run_ledger(SMOKE, tmp_path, only=["2"], runner=_fake_runner(calls), progress=False, log=lambda s: None)
    assert calls == [] and again == first
    (tmp_path / "kmeans_s1.json").unlink()
    run_ledger(SMOKE, tmp_path, only=["2"], runner=_fake_runner(calls), progress=False, log=lambda s: None)
    assert calls == ["kmeans_s1"]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"
    assert all(r["seconds"] >= 0 for r in again.values())


def test_corrupt_result_is_named_in_the_error(tmp_path):
    run_ledger(SMOKE, tmp_path, only=["2a"], runner=_fake_runner([]), progress=False, log=lambda s: None)
    damaged = tmp_path / "sela_s0.json"
    damaged.write_text(damaged.read_text()[:40])
    with pytest.raises(LedgerFileError, match="sela_s0.json"):
        run_ledger(SMOKE, tmp_path, only=["2a"], runner=_fake_runner([]), progress=False, log=lambda s: None)


def test_result_of_another_setting_is_refused(tmp_path):
    run = plan(SMOKE, claims_for(["2a"]))[0]
    write_result(result_path(tmp_path, run), {"format": 1, "measures": {"knn": 1.0}, "run": {"seed": 99}})
    with pytest.raises(LedgerFileError, match="another setting"):
        read_result(result_path(tmp_path, run), run, SMOKE)


def test_table_has_one_row_per_claim_with_its_verdict(tmp_path):
    results = run_ledger(SMOKE, tmp_path, only=["2"], runner=_fake_runner([]), progress=False, log=lambda s: None)
    rows = ledger_rows(results, claims_for(["2"]))
    assert [r["verdict"] for r in rows] == [REPRODUCES, REPRODUCES, WITHIN]   # nmi equal: within the spread
    assert format_table(rows).count("\n") == len(rows) + 1


def test_a_read_only_ledger_names_the_command_that_records_a_missing_row(tmp_path):
    results = run_ledger(SMOKE, tmp_path, only=["2a"], runner=_fake_runner([]), progress=False, log=lambda s: None)
    command = "sela-edu ledger --profile classroom"
    rows = ledger_rows(results, claims_for(["2", "3"]), record_command=command)
    by_id = {r["claim"]: r for r in rows}
    assert by_id["2a"]["verdict"] == REPRODUCES                      # stored rows keep their verdict
    assert by_id["3b"]["verdict"] == ledger.NOT_RECORDED and f"`{command} --only 3b`" in by_id["3b"]["measured"]
    counts = ledger.verdict_counts(rows)
    assert counts[ledger.NOT_RECORDED] == 4 and counts[NOT_RUN] == 0 and sum(counts.values()) == len(rows)
    assert ledger_rows({}, claims_for(["2a"]))[0]["verdict"] == NOT_RUN   # without the command: "not run"


def test_ablation_figure_draws_what_is_there(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sela_edu.course.ledger.plots import ABLATIONS, ablation_figure

    results = run_ledger(SMOKE, tmp_path, only=["2a"], runner=_fake_runner([]), progress=False, log=lambda s: None)
    for claim in (3, 4, 5, 6):                                        # settings partly or wholly missing
        plt.close(ablation_figure(results, ABLATIONS[claim], SMOKE))
        plt.close(ablation_figure({}, ABLATIONS[claim], SMOKE))


# ---------------------------------------------------------------- end to end
# (the whole smoke ledger runs in notebook 08's smoke run, tests/test_notebooks.py; this is the quick path)

def test_smoke_ledger_runs_claims_end_to_end_on_digits(tmp_path):
    results = run_ledger("smoke", tmp_path, only=["1", "7", "9"], progress=False, log=lambda s: None)
    assert set(results) == {p.stem for p in tmp_path.glob("*.json")}
    stored = json.loads((tmp_path / "transfer_s0.json").read_text())
    assert stored["run"]["source"] == "sela" and 0 <= stored["measures"]["linear"] <= 100
    rows = ledger_rows(results, claims_for(["1", "7", "9"]))
    assert all(r["verdict"] in ledger.VERDICTS for r in rows), rows


def test_smoke_ledger_runs_the_successors_claims_on_digits(tmp_path):
    results = run_ledger("smoke", tmp_path, only=["13", "14"], progress=False, log=lambda s: None)
    assert {r["setting"] for r in results.values()} == {"swav", "deepcluster-v2", "sela-v2"}
    by_run = {name: r["measures"] for name, r in results.items()}
    assert by_run["swav_s0"]["relabel_share"] == 0.0 < by_run["sela-v2_s0"]["relabel_share"]
    assert by_run["sela-v2_s0"]["largest_cluster"] >= 1.0 and by_run["swav_s0"]["largest_cluster"] >= 1.0
    stored = json.loads((tmp_path / "swav_s0.json").read_text())
    assert stored["config"]["method"] == "swav" and stored["config"]["small_crop_size"] == 5   # 16 px of 28, at 8 px
    rows = ledger_rows(results, claims_for(["13", "14"]))
    assert all(r["verdict"] in ledger.VERDICTS for r in rows), rows


def test_cli_ledger_names_an_unknown_claim_before_running(tmp_path, capsys):
    from sela_edu.cli import main

    code = main(["ledger", "--profile", "smoke", "--out", str(tmp_path), "--only", "15"])
    assert code != 0 and "'15'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

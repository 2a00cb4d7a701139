"""Several samples per row, pass@k and majority vote, confidence intervals and paired
comparisons, against a real local server whose answers are right half the time at random."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import read_jsonl, run_cli, write_jsonl
from genrun.scoring import pass_at_k
from genrun.scoring.stats import ci95, mcnemar, wilson
from genrun.testing.fault_server import FaultServer


def run_args(server: FaultServer, data: Path, out: Path, *extra: str) -> list[str]:
    return ["backend=openai", f"backend.base_url={server.url}", "backend.model_name=fake", "backend.retries=0",
            "dataset=default", f"dataset.path={data}", "dataset.fields.reference=ref", "scoring.metrics=[accuracy]",
            f"hydra.run.dir={out}", *extra]


def capitals(tmp_path: Path, n: int = 80) -> Path:
    return write_jsonl(tmp_path / "d.jsonl", [{"id": f"q{i}", "prompt": f"Capital of France, take {i}?", "ref": "Paris"}
                                              for i in range(n)])


def test_n_samples_give_pass_at_k_majority_and_an_interval(tmp_path: Path) -> None:
    data = capitals(tmp_path)
    with FaultServer(work_s=0, reply=["Paris", "Rome"]) as server:
        result = run_cli(*run_args(server, data, tmp_path / "run", "+sampling.n=4"))
        assert result.returncode == 0, result.stderr
        assert len(server.bodies) == 80 and all(b["n"] == 4 for b in server.bodies)  # the server's own `n`
    records = read_jsonl(tmp_path / "run" / "answers.jsonl")
    assert all(len(r["answers"]) == 4 and r["answer"] == r["answers"][0] and len(r["sample_scores"]) == 4
               for r in records)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    scores, ci = metrics["scores"], metrics["scores_ci95"]
    assert abs(scores["pass@1"] - 0.5) < 0.1 and abs(scores["pass@4"] - 0.9375) < 0.06
    assert scores["pass@4"] > scores["pass@2"] > scores["pass@1"] == scores["accuracy"]
    assert "maj@4" in scores and metrics["scores_rows"]["accuracy"] == 80
    low, high = ci["accuracy"]
    assert low < scores["accuracy"] < high and 0.05 < high - low < 0.25  # rows resampled, not samples


def test_a_server_that_ignores_n_is_asked_again_per_sample(tmp_path: Path) -> None:
    data = capitals(tmp_path, 5)
    with FaultServer(work_s=0) as server:  # one choice, whatever `n` asks
        result = run_cli(*run_args(server, data, tmp_path / "run", "+sampling.n=3"))
        assert len(server.bodies) == 5 * 3
    assert result.returncode == 0, result.stderr
    assert all(len(r["answers"]) == 3 for r in read_jsonl(tmp_path / "run" / "answers.jsonl"))


def test_compare_a_run_with_itself_and_a_real_difference(tmp_path: Path) -> None:
    data = capitals(tmp_path)
    with FaultServer(work_s=0, reply=["Paris", "Rome"]) as half, FaultServer(work_s=0, reply="Rome") as never:
        assert run_cli(*run_args(half, data, tmp_path / "a")).returncode == 0
        assert run_cli(*run_args(never, data, tmp_path / "b")).returncode == 0

    def compare(*args: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "genrun.commands.compare", *args, "--json"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    same = compare(str(tmp_path / "a"), str(tmp_path / "a"))
    assert (same["diff"], same["p_value"], same["rows"]) == (0.0, 1.0, 80) and "no significant" in same["verdict"]
    real = compare(str(tmp_path / "a"), str(tmp_path / "b"))
    assert real["p_value"] < 0.001 and real["ci95"][0] > 0.3 and real["verdict"].startswith("A is better than B")
    assert real["a_better"] == round(real["diff"] * 80) and real["b_better"] == 0


def test_the_estimators() -> None:
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 2, 2) == 1 - 1 / 6  # 1 - C(2,2)/C(4,2)
    low, high = wilson(40, 80)
    assert abs(low - 0.393) < 0.001 and abs(high - 0.607) < 0.001  # the textbook values
    assert abs(ci95([1.0] * 10)[1] - 1.0) < 1e-9 and abs(ci95([0.0] * 10)[0]) < 1e-9
    assert mcnemar([1, 0, 1], [1, 0, 1]) == 1.0


def test_each_row_gets_its_own_seed_whatever_the_concurrency(tmp_path: Path) -> None:
    data = capitals(tmp_path, 12)
    seeds = []
    for concurrency in (1, 8):
        with FaultServer(work_s=0) as server:
            result = run_cli(*run_args(server, data, tmp_path / f"c{concurrency}", "+sampling.seed=7",
                                       f"backend.concurrency={concurrency}"))
            assert result.returncode == 0, result.stderr
            seeds.append({b["messages"][-1]["content"]: b["seed"] for b in server.bodies})
    assert seeds[0] == seeds[1] and len(set(seeds[0].values())) == 12  # the same per row, different across rows


def test_a_seeds_axis_is_folded_into_a_mean_and_interval_per_cell(tmp_path: Path) -> None:
    data = capitals(tmp_path, 20)
    sweep = tmp_path / "sweep"
    with FaultServer(work_s=0, reply=["Paris", "Rome"]) as server:
        result = run_cli("-m", *run_args(server, data, tmp_path / "unused")[:-1], "sampling.temperature=0,1",
                         "+sampling.seed=0,1,2", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    summary = (sweep / "summary.md").read_text()
    folded = summary.split("Over seeds (accuracy, mean and 95% t interval over the seeds):")[1]
    cells = [line for line in folded.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")]
    assert len(cells) == 2 and all("| 3 |" in c for c in cells)  # two temperatures, three seeds each
    assert "Best on accuracy: sampling.temperature=" in summary
    assert len(list(sweep.glob("*/answers.jsonl"))) == 6


def test_a_bounded_scores_intervals_stay_in_its_bounds_and_an_mdd_past_it_says_so(tmp_path: Path) -> None:
    """Two seeds of 2 rows each: accuracy 0.0 and 0.5. The t interval over two seeds (t = 12.7)
    reaches far past [0, 1], and with 2 rows no difference is detectable."""
    import yaml

    from genrun.reports.summary import write_summary
    from genrun.rundir.journal import write_json
    from genrun.rundir.tally import Tally

    sweep = tmp_path / "sweep"
    for job, scores in enumerate([[0.0, 0.0], [0.0, 1.0]]):
        tally = Tally(["accuracy"])
        for index, score in enumerate(scores):
            tally.add({"index": index, "error": None, "answer": "a", "scores": {"accuracy": score}})
        metrics = {**tally.result(), "status": "ok", "rows_per_s": 1.0}
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"+sampling.seed={job}"]))
        write_json(sweep / str(job) / "metrics.json", metrics)
        assert metrics["scores_range"] == {"accuracy": [0, 1]}
        low, high = metrics["scores_ci95"]["accuracy"]
        assert 0 <= low <= high <= 1
    assert metrics["scores_mdd"] == {"accuracy": None}  # 2.8 sd sqrt(2/2) = 1.98: past the whole scale

    write_summary(sweep, ["accuracy"])
    summary = (sweep / "summary.md").read_text()
    folded = summary.split("Over seeds (accuracy, mean and 95% t interval over the seeds):")[1]
    assert "| 2 | 0.2500 (0.0000–1.0000) |" in folded
    assert "not detectable at this size" in summary
    assert "not detectable at this size" in (sweep / "summary.csv").read_text()

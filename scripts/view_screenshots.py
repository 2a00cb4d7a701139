"""The screenshots of genrun-view in docs/: two runs and a sweep made by genrun against the
local fault server (its answers are "answer to <prompt>"), shown in Debian's Chromium.

    python scripts/view_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from genrun.testing.fault_server import FaultServer

QUESTIONS = ["What is the capital of France?", "Name a prime number above 10.", "Who wrote Hamlet?",
             "What is 7 x 8?", "Which planet is the largest?", "What colour is the sky on a clear day?"]


def genrun(server: FaultServer, data: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "genrun", "backend=openai", f"backend.base_url={server.url}",
                    "backend.model_name=demo-model", f"dataset.path={data}", "dataset.fields.reference=reference",
                    "scoring.metrics=[exact_match,f1]", *extra], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="genrun-view-shots-"))
    outputs = work / "outputs"
    rows = [{"prompt": q, "reference": f"answer to {q}" if i % 3 else "no"} for i, q in enumerate(QUESTIONS * 4)]
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FaultServer(work_s=0) as server:
        genrun(server, data, f"hydra.run.dir={outputs}/2026-12-02/base")
        genrun(server, data, "-m", "sampling.temperature=0.0,0.7", "sampling.top_p=0.8,0.95",
               f"hydra.sweep.dir={outputs}/multirun/2026-12-02/sweep")
    with FaultServer(work_s=0, reply=["The capital is Paris.", "<b>bold?</b> no: shown as text", "I am not sure."],
                     seed=1) as server:
        genrun(server, data, f"hydra.run.dir={outputs}/2026-12-02/other")
    view = subprocess.Popen([sys.executable, "-m", "genrun.view", str(outputs), "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    address = re.search(r"(http://\S+)/", view.stderr.readline()).group(1)
    from playwright.sync_api import sync_playwright

    pages = {"view-runs.png": "/", "view-run.png": "/run?key=2026-12-02/other",
             "view-row.png": "/row?key=2026-12-02/other&pos=1",
             "view-sweep.png": "/sweep?key=multirun/2026-12-02/sweep",
             "view-compare.png": "/compare?a=2026-12-02/base&b=2026-12-02/other"}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            for name, path in pages.items():
                page.goto(address + path)
                page.screenshot(path=str(args.out / name), full_page=False)
                print(args.out / name)
            browser.close()
    finally:
        view.terminate()


if __name__ == "__main__":
    main()

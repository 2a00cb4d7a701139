"""The screenshot of MLflow's UI in docs/: a 2x2 sweep made by genrun against the local fault
server (its answers are "answer to <prompt>"), tracked by a `mlflow server` with a SQLite store
on 127.0.0.1, shown in Debian's Chromium.

    python scripts/tracker_screenshot.py [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from genrun.testing.fault_server import FaultServer

QUESTIONS = ["What is the capital of France?", "Name a prime number above 10.", "Who wrote Hamlet?",
             "What is 7 x 8?", "Which planet is the largest?", "What colour is the sky on a clear day?"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="genrun-mlflow-shot-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{work / 'mlflow.db'}", "--artifacts-destination", str(work / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        rows = [{"prompt": q, "reference": f"answer to {q}" if i % 3 else "no"} for i, q in enumerate(QUESTIONS * 4)]
        data = work / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with FaultServer(work_s=0) as model:
            subprocess.run([sys.executable, "-m", "genrun", "-m", "backend=openai", f"backend.base_url={model.url}",
                            "backend.model_name=demo-model", f"dataset.path={data}",
                            "dataset.fields.reference=reference", "scoring.metrics=[exact_match,f1]",
                            "tracker=mlflow", f"tracker.tracking_uri={url}", "tracker.experiment=choose-sampling",
                            f"hydra.sweep.dir={work / 'sweep'}", "sampling.temperature=0.0,0.7",
                            "sampling.top_p=0.8,0.95"], check=True, capture_output=True)
        from mlflow.tracking import MlflowClient
        from playwright.sync_api import sync_playwright

        experiment = MlflowClient(url).get_experiment_by_name("choose-sampling").experiment_id
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1600, "height": 600})
            page.goto(f"{url}/#/experiments/{experiment}/runs")
            page.wait_for_timeout(6000)
            page.get_by_role("button", name="Close").click()  # the assistant's panel
            box = page.get_by_text("sweep", exact=True).first.bounding_box()
            page.mouse.click(box["x"] - 32, box["y"] + box["height"] / 2)  # the parent's expander: its children
            page.wait_for_timeout(2000)
            page.screenshot(path=str(args.out / "mlflow-sweep.png"))
            print(args.out / "mlflow-sweep.png")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()

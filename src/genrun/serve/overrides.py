"""What genrun-serve's command line sets before any client comes: the backend, from `genrun`-style
Hydra overrides, and the conventions where the page is silent."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from genrun import credentials
from genrun.api import Conventions


def start_settings(overrides: list[str], always: bool = False) -> Optional[dict[str, Any]]:
    """generation_init's arguments from `genrun`-style overrides (backend=..., sampling...),
    composed as the CLI composes them, with the keys given on the command line; None without
    overrides (unless always)."""
    if not overrides and not always:
        return None
    from genrun.backend.build import class_of
    from genrun.settings import compose, load_generation

    backend, sampling, extra = load_generation(compose(overrides))
    name = class_of(backend).name
    settings = {k: v for k, v in backend.items() if k != "_target_"}
    settings.update(credentials.for_component("backend"))
    return {"backend_configs": {name: settings}, "backend": name, "sampling_params": sampling, "extra_params": extra}


def conventions(args: argparse.Namespace) -> Conventions:
    return Conventions(failed_answer=args.failed_answer, images_first=args.images_first,
                       strict_images=args.strict_images)

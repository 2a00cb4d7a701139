"""genrun-view's web application: the pages (runs, a run, a row, a sweep, a comparison), the
live counts a run's page polls, and the guard every request passes first: GET only, a Host
header naming this server (no DNS rebinding), the token when one is set, and headers that
keep the browser from running anything the pages did not ship (a Content-Security-Policy
with no inline script)."""

from __future__ import annotations

import math
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from genrun.listen import host_allowed
from genrun.reports.summary import job_rows
from genrun.view import pages
from genrun.view.catalog import Catalog, held_locks, is_running, main_metric, read_json, run_line
from genrun.view.rows import Filter, Rows

PAGE = 50  # rows a page
RUNS_KEPT = 8  # runs whose rows stay in memory
COOKIE = "genrun_view_token"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


def templates() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("genrun.view", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["score"] = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    env.filters["ci"] = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]" if isinstance(v, list) and len(v) == 2 else ""
    return env


class Viewer:
    """The state behind the pages: the catalog of runs and sweeps, and the rows of open runs."""

    def __init__(self, roots: list[Path]) -> None:
        self.catalog = Catalog(roots)
        self.open: OrderedDict[str, Rows] = OrderedDict()
        self.env = templates()

    def rows(self, key: str) -> tuple[Rows, dict[str, Any], dict[str, Any]]:
        found = self.catalog.get(key, "run")
        if found is None:
            raise LookupError(f"no run {key!r} here")
        run, metrics = read_json(found.path / "run.json"), read_json(found.path / "metrics.json")
        rows = self.open.get(key)
        if rows is None:
            rows = Rows(found.path / "answers.jsonl", main_metric(run, metrics))
            self.open[key] = rows
            while len(self.open) > RUNS_KEPT:
                self.open.popitem(last=False)
        self.open.move_to_end(key)
        rows.refresh()
        return rows, run, metrics

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

    # -- pages -------------------------------------------------------------------------------

    def runs_page(self) -> str:
        found = self.catalog.scan(force=True)
        locked = held_locks()
        runs = [run_line(f, locked) for f in found.values() if f.kind == "run"]
        runs.sort(key=lambda r: r["when"], reverse=True)
        sweeps = [f for f in found.values() if f.kind == "sweep"]
        return self.render("runs.html", runs=runs, sweeps=sweeps)

    def run_page(self, key: str, query: dict[str, str]) -> str:
        rows, run, metrics = self.rows(key)
        rows.start_columns()  # the filters' columns: built while the user reads the page
        against = query.get("against")
        other = self.catalog.get(against, "run") if against else None
        others = [k for k, f in self.catalog.scan().items() if f.kind == "run" and k != key]
        scores = metrics.get("scores") or {}
        intervals = metrics.get("scores_ci95") or {}
        return self.render("run.html", key=key, metrics=metrics, run=run, metric=rows.metric, status=self.status(key),
                           scores=[(m, v, intervals.get(m)) for m, v in scores.items()],
                           totals=[(k, metrics[k]) for k in ("rows", "answered", "failed", "prompt_tokens",
                                                             "completion_tokens", "wall_s", "cost", "status")
                                   if k in metrics],
                           settings=pages.settings(run, read_json(other.path / "run.json") if other else None),
                           against=against if other else None, others=others, table=self.table(key, rows, query),
                           live_url="/api/live?" + urlencode({"key": key}),
                           rows_url="/rows?" + urlencode({k: v for k, v in query.items() if k != "against"}))

    def table(self, key: str, rows: Rows, query: dict[str, str]) -> dict[str, Any]:
        chosen = filter_of(query)
        positions = rows.select(chosen)
        total = len(positions)
        pages_count = max(1, math.ceil(total / PAGE))
        page = min(max(int_of(query.get("page"), 1), 1), pages_count)
        order = "newest" if query.get("order") == "newest" else "journal"
        if order == "newest":
            positions = positions[::-1]
        shown = positions[(page - 1) * PAGE: page * PAGE]
        lines = [pages.row_line(int(p), rows.record(int(p)), rows.metric) for p in shown]
        base = {k: v for k, v in query.items() if k not in ("page", "against")}
        link = lambda n: "/run?" + urlencode({**base, "page": str(n)})  # noqa: E731
        return {"key": key, "lines": lines, "total": total, "page": page, "pages": pages_count, "filter": chosen,
                "order": order, "shows": Filter.SHOWS, "counts": rows.counts(), "metric": rows.metric,
                "previous": link(page - 1) if page > 1 else None,
                "next": link(page + 1) if page < pages_count else None}

    def rows_fragment(self, key: str, query: dict[str, str]) -> str:
        rows, _, _ = self.rows(key)
        return self.render("table.html", table=self.table(key, rows, query))

    def row_page(self, key: str, position: int) -> str:
        rows, _, _ = self.rows(key)
        if not 0 <= position < len(rows.ends):
            raise LookupError(f"run {key!r} has no row at position {position}")
        record = rows.record(position)
        if record is None:
            raise LookupError(f"the record at position {position} of run {key!r} is garbled")
        return self.render("row.html", key=key, row=pages.row_detail(record, rows.metric))

    def sweep_page(self, key: str) -> str:
        found = self.catalog.get(key, "sweep")
        if found is None:
            raise LookupError(f"no sweep {key!r} here")
        jobs = job_rows(found.path)
        for job in jobs:
            job["key"] = self.catalog.key_of(found.path / job["job"])
        swept = [k for k in dict.fromkeys(k for j in jobs for k in j["params"])
                 if len({j["params"].get(k) for j in jobs}) > 1]
        metrics = list(dict.fromkeys(m for j in jobs for m in j["scores"]))
        return self.render("sweep.html", key=key, jobs=jobs, swept=swept, metrics=metrics,
                           plot=(found.path / "summary.png").is_file())

    def compare_page(self, query: dict[str, str]) -> str:
        from genrun.errors import UserError
        from genrun.reports.compare import compare

        a_key, b_key = query.get("a", ""), query.get("b", "")
        a, b = self.catalog.get(a_key, "run"), self.catalog.get(b_key, "run")
        if a is None or b is None:
            raise LookupError(f"no run {a_key if a is None else b_key!r} here")
        rows_a, rows_b = self.rows(a_key)[0], self.rows(b_key)[0]
        try:
            result, problem = compare(a.path, b.path, force=query.get("force") == "1"), None
        except UserError as exc:
            result, problem = None, str(exc)
        which = query.get("which") or "all"
        which = which if which in ("won", "lost") else "all"
        differ = pages.differing(rows_a, rows_b, which)
        pages_count = max(1, math.ceil(len(differ) / PAGE))
        page = min(max(int_of(query.get("page"), 1), 1), pages_count)
        pairs = [(row, pages.row_line(pa, rows_a.record(pa), rows_a.metric),
                  pages.row_line(pb, rows_b.record(pb), rows_b.metric))
                 for row, pa, pb in differ[(page - 1) * PAGE: page * PAGE]]
        base = {"a": a_key, "b": b_key, "which": which}
        return self.render("compare.html", a=a_key, b=b_key, result=result, problem=problem, which=which,
                           pairs=pairs, total=len(differ), page=page, pages=pages_count,
                           link=lambda **extra: "/compare?" + urlencode({**base, **extra}))

    def status(self, key: str) -> str:
        """running (some genrun holds the run's lock), else metrics.json's status."""
        found = self.catalog.get(key, "run")
        if found is None:
            return "gone"
        if is_running(found.path, held_locks()):
            return "running"
        return str(read_json(found.path / "metrics.json").get("status", "unfinished"))

    def live(self, key: str) -> dict[str, Any]:
        rows, _, _ = self.rows(key)
        return {**rows.counts(), "status": self.status(key)}


def filter_of(query: dict[str, str]) -> Filter:
    show = query.get("show", "all")
    return Filter(show=show if show in Filter.SHOWS else "all", low=float_of(query.get("low")),
                  high=float_of(query.get("high")), text=query.get("q", "").strip())


def int_of(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def float_of(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None


class Guard:
    """ASGI middleware: every request is checked before the app sees it."""

    def __init__(self, app: Any, hosts: list[str], token: str | None) -> None:
        self.app, self.hosts, self.token = app, hosts, token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] not in ("GET", "HEAD"):
            return await plain(send, 405, "genrun-view is read-only: GET only")
        if not host_allowed(headers.get("host", ""), self.hosts):
            return await plain(send, 403, "refused: this Host header does not name this server "
                                          "(genrun-view --allowed-host NAME adds one)")
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            given = query.get("token") or cookie(headers.get("cookie", ""))
            bearer = headers.get("authorization", "")
            given = given or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                return await plain(send, 401, "this genrun-view needs its token: open the address it printed")
            if "token" in query:  # once: the cookie carries it from now on, the address bar no longer
                rest = urlencode({k: v for k, v in query.items() if k != "token"})
                location = scope["path"] + (f"?{rest}" if rest else "")
                return await plain(send, 303, "", [(b"location", location.encode()), (b"set-cookie", (
                    f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/").encode())])

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, secured)


def cookie(header: str) -> str:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return ""


async def plain(send: Any, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        *(extra or []), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})

"""Targets checked against a run, the machine it ran on, and the JSON and markdown results."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import orjson

from bench.stack import ROOT

LAG_P99_MS = 20.0
REBUILD_EVENTS_PER_S = 50_000.0
RSS_LIMIT_MB = 150.0
PEER_TASKS = 100_000


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        return "unknown"
    return "unknown"


def _output(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    # `wrk -v` prints its version and exits 1, so the first line counts whatever the status.
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0].strip() if text else ""


def _memory() -> str:
    kilobytes = _first("/proc/meminfo", "MemTotal").split()[0]
    return f"{int(kilobytes) / 1024**2:.0f} GB RAM" if kilobytes.isdigit() else "unknown"


def machine(postgres_version: str) -> dict[str, Any]:
    """Where the figures came from: they only compare within one run on one machine."""
    dirty = _output("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "memory": _memory(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "wrk": _output("wrk", "-v").split(" Copyright")[0] or "wrk (version unknown)",
        "commit": _output("git", "rev-parse", "--short", "HEAD")
        + (" with uncommitted changes" if dirty else ""),
    }


def _ratio(value: float, base: float | None) -> float | None:
    return value / base if base else None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target against this run: what, target, value, met."""
    checks: list[dict[str, Any]] = []

    def check(what: str, target: str, value: str, met: bool) -> None:
        checks.append({"what": what, "target": target, "value": value, "met": met})

    for name, entry in results["scenarios"].items():
        rps, p99 = entry["http"]["rps"], entry["http"]["p99_ms"]
        targets = entry["targets"]
        if targets.get("peer_factor"):
            ratio = rps / entry["peer_rps"]
            check(
                name,
                f"≥ {targets['peer_factor']:g}× peer",
                f"{ratio:.1f}×",
                ratio >= targets["peer_factor"],
            )
        if targets.get("p99_below_ms"):
            limit = targets["p99_below_ms"]
            check(name, f"p99 < {limit:g} ms", f"{p99:.1f} ms", p99 < limit)
        if "stale_reads" in targets:
            stale = sum(r["errors"].get("stale", 0) for r in entry["http"]["rounds"])
            check(name, "0 stale reads", f"{stale} stale", stale <= targets["stale_reads"])
        if targets.get("share_of"):
            other, share = targets["share_of"]
            ratio = rps / results["scenarios"][other]["http"]["rps"]
            check(name, f"≥ {share:.0%} of {other}", f"{ratio:.0%}", ratio >= share)
        if targets.get("ceiling_share"):
            share = rps / entry["ceiling"]["rps"]
            check(
                name,
                f"≥ {targets['ceiling_share']:.0%} of {entry['ceiling']['kind']}",
                f"{share:.0%}",
                share >= targets["ceiling_share"],
            )
        if targets.get("http_share"):
            share = rps / results["ceilings"]["http"]["rps"]
            check(
                name,
                f"≥ {targets['http_share']:.0%} of the trivial endpoint",
                f"{share:.0%}",
                share >= targets["http_share"],
            )
    lag = results["projection_lag"]["p99_ms"]
    check("projection lag", f"p99 < {LAG_P99_MS:g} ms", f"{lag:.1f} ms", lag < LAG_P99_MS)
    speed = results["rebuild"]["events_per_second"]
    check(
        "rebuild",
        f"≥ {REBUILD_EVENTS_PER_S:,.0f} events/s",
        f"{speed:,.0f} events/s",
        speed >= REBUILD_EVENTS_PER_S,
    )
    for process, mb in results["rss_mb"]["service"].items():
        check(f"RSS {process}", f"< {RSS_LIMIT_MB:g} MB", f"{mb:.0f} MB", mb < RSS_LIMIT_MB)
    return checks


def _met(checks: list[dict[str, Any]], what: str) -> tuple[str, str]:
    mine = [c for c in checks if c["what"] == what]
    if not mine:
        return "–", "–"
    target = ", ".join(c["target"] for c in mine)
    missed = [f"{c['value']} vs {c['target']}" for c in mine if not c["met"]]
    return target, "yes" if not missed else "**no**: " + "; ".join(missed)


def cpu_cell(spent: dict[str, float] | None) -> str:
    """CPU ms per request by process group, then their total: `service 0.41 + postgres 0.20
    = 0.61`; a dash when nothing was sampled."""
    if not spent:
        return "–"
    parts = " + ".join(f"{name} {ms:.2f}" for name, ms in spent.items() if name != "total")
    return f"{parts} = {spent['total']:.2f}"


def _x(value: float | None) -> str:
    return f"{value:.2f}×" if value is not None else "–"


def markdown(results: dict[str, Any]) -> str:
    checks = results["targets"]
    seed = results["seed"]
    tasks = seed["tasks"]
    lines = [
        f"# Benchmark {results['started_at']}",
        "",
        f"`{results['command']}` — {tasks:,} tasks seeded at {seed['rate']:,.0f} tasks/s; "
        f"wrk {results['options']['threads']} threads, {results['options']['connections']} "
        f"connections, {results['options']['rounds']} × {results['options']['duration']} s "
        f"after {results['options']['warmup']} s warm-up, medians.",
        "",
        "| scenario | req/s | p99 | CPU ms per request | ceiling req/s "
        "| ceiling CPU ms per request | ratio to ceiling | ratio to HTTP ceiling | ratio to peer "
        "| target | met? |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|---|---|",
    ]
    http = results["ceilings"]["http"]["rps"]
    for name, entry in results["scenarios"].items():
        rps, p99 = entry["http"]["rps"], entry["http"]["p99_ms"]
        errors = entry["http"]["errors"]
        target, met = _met(checks, name)
        ceiling = entry.get("ceiling")
        own_ceiling = f"{ceiling['rps']:,.0f} ({ceiling['kind']})" if ceiling else "–"
        lines.append(
            f"| {entry['label']}{f' ({errors} errors)' if errors else ''} | {rps:,.0f} "
            f"| {p99:,.1f} ms | {cpu_cell(entry['http'].get('cpu_ms'))} | {own_ceiling} "
            f"| {cpu_cell(ceiling.get('cpu_ms')) if ceiling else '–'} "
            f"| {_x(_ratio(rps, ceiling['rps'] if ceiling else None))} | {_x(_ratio(rps, http))} "
            f"| {_x(_ratio(rps, entry['peer_rps']))} | {target} | {met} |"
        )
    lag, rebuilt, feed = results["projection_lag"], results["rebuild"], results["feed"]
    lines += [
        "",
        "| measure | value | target | met? |",
        "|---|---:|---|---|",
        f"| HTTP ceiling: trivial FastAPI endpoint, same uvicorn stack | {http:,.0f} req/s "
        f"(p99 {results['ceilings']['http']['p99_ms']:.1f} ms; CPU ms per request: "
        f"{cpu_cell(results['ceilings']['http'].get('cpu_ms'))}) | – | – |",
        f"| seeding through POST, {results['options']['seed_connections']} connections "
        f"| {seed['rate']:,.0f} tasks/s | – | – |",
        f"| projection lag at {lag['achieved_rate']:,.0f} writes/s (half of max create), "
        f"p50 / p99 | {lag['p50_ms']:.1f} / {lag['p99_ms']:.1f} ms"
        f"{' (' + str(len(lag['failures'])) + ' failures)' if lag['failures'] else ''}; "
        f"CPU ms per write: {cpu_cell(lag.get('cpu_ms'))} "
        f"| {_met(checks, 'projection lag')[0]} | {_met(checks, 'projection lag')[1]} |",
        f"| event feed paging through the whole store ({feed['events']:,} events, "
        f"{feed['pages']:,} pages of {feed['page_size']:,}; first / last full page "
        f"{feed['first_page_ms']:.0f} / {feed['last_full_page_ms']:.0f} ms) "
        f"| {feed['events_per_second']:,.0f} events/s | – | – |",
        f"| rebuild of {rebuilt['events']:,} events (all of it, indexes and swap included) "
        f"| {rebuilt['events_per_second']:,.0f} events/s; CPU ms per 1,000 events: "
        f"{cpu_cell(rebuilt.get('cpu_ms_per_1000_events'))} | {_met(checks, 'rebuild')[0]} "
        f"| {_met(checks, 'rebuild')[1]} |",
    ]
    for name, entry in results["scenarios"].items():
        table = entry.get("read_table_before") or {}
        if name.startswith("offset") and table:
            share = table.get("all_visible_share")
            lines.append(
                f"| read table before `{name}`: heap fetches of one request, pages all-visible, "
                f"autovacuum / autoanalyze runs | {table.get('heap_fetches', '–')}, "
                f"{'–' if share is None else f'{share:.0%}'}, {table.get('autovacuum_count')} / "
                f"{table.get('autoanalyze_count')} | – | – |"
            )
    for process, mb in results["rss_mb"]["service"].items():
        target, met = _met(checks, f"RSS {process}")
        lines.append(
            f"| peak RSS: {process} | {mb:.0f} MB (peer {results['peer_rss_mb']:g} MB) "
            f"| {target} | {met} |"
        )
    for process, mb in results["rss_mb"]["harness"].items():
        lines.append(f"| peak RSS (harness): {process} | {mb:.0f} MB | – | – |")
    m = results["machine"]
    lines += [
        "",
        f"Machine: {m['cpus']} × {m['cpu']}, {m['memory']}, Linux {m['kernel']}, "
        f"Python {m['python']}, PostgreSQL {m['postgresql']} (autovacuum "
        f"{m.get('postgresql_autovacuum', 'unknown')}), {m['wrk']}; commit {m['commit']}; "
        f"1-minute load average {results['load_average'][0]:.1f} at the start, "
        f"{results['load_average'][1]:.1f} at the end.",
        "Ceilings: reads against the same SQL through asyncpg (32 clients, pool of 10), writes "
        "against `Application.save` / `update_task` without HTTP "
        f"({results['ceilings']['append']['threads']} threads, a database of its own).",
    ]
    if tasks != PEER_TASKS:
        lines.append(
            f"The peer's figures were measured at {PEER_TASKS:,} tasks; this run has {tasks:,}, "
            "so ratios to the peer are only indicative."
        )
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], out_dir: Path, stamp: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}.json"
    md_path = out_dir / f"{stamp}.md"
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    md_path.write_text(markdown(results))
    return json_path, md_path

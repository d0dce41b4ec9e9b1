"""The fault benchmark's summary: a plain-text table for the console and the Markdown results file."""

from __future__ import annotations

from typing import Any

from faults_requests import REQUEST_FAULTS

CONTROL = "control_no_fault"
COLUMNS = ("outcome", "detected", "wrong_results", "acknowledged_lost", "plain_text_500s", "tracebacks")
HEAD = ("fault", "outcome", "detected", "wrong", "acked lost", "plain 500s", "tracebacks", "what happened")
DAMAGE = ("wrong_results", "acknowledged_lost", "plain_text_500s", "tracebacks")


def outcome(name: str, rec: dict[str, Any]) -> str:
    """``detected``; ``harmless`` (not reported, but nothing wrong, lost or crashed); or ``NOT DETECTED``.

    A hostile request that is not refused is never harmless: it was accepted.
    """
    if "skipped" in rec:
        return "skipped"
    damage = any(rec.get(k) for k in DAMAGE)
    if name == CONTROL:
        return "CONTROL BROKEN" if damage or rec.get("detected") else "control ok"
    if rec.get("detected"):
        return "detected, with damage" if damage else "detected"
    if rec.get("start", {}).get("hung_after_error"):
        return "error line, then HUNG"
    if name in REQUEST_FAULTS or damage:
        return "NOT DETECTED"
    return "harmless"


def what_happened(rec: dict[str, Any]) -> str:
    """One short phrase: the start error line, the skip reason, or the probes' gist."""
    if "skipped" in rec:
        return f"skipped: {rec['skipped']}"
    start = rec.get("start", {})
    if start.get("hung_after_error"):
        return f"printed {str(start.get('error_line'))[:60]}..., then {start['hung_after_error']}"
    if start and not start.get("up"):
        line = start.get("error_line") or start.get("last_line") or ""
        return f"refused to start (rc {start.get('returncode')}): {str(line)[:110]}"
    probes = rec.get("probes", {})
    if "answer" in rec:
        a = rec["answer"]
        return f"HTTP {a.get('status')} {a.get('content_type', '')} {a.get('error', '')}".strip()[:120]
    if "answers" in rec:
        return "; ".join(f"{k}: {v.get('status')}" for k, v in rec["answers"].items())[:120]
    if "write" in probes:
        return (
            f"started; write answered {probes['write'].get('status')}; searches {probes.get('search_status')}"
        )
    if "failed_writes" in probes:
        fails = [f.get("status") for f in probes["failed_writes"]]
        return (
            f"{probes.get('acked_writes')} writes acked, then {fails}; restart up: {probes.get('restart_up')}"
        )
    if "acked_before_kill" in probes:
        return f"{probes['acked_before_kill']} writes acked before kill -9; restart up: {probes.get('restart_up')}"
    health = probes.get("healthz", {})
    return f"started; /healthz {health.get('status')}; searches {probes.get('search_status')}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def rows(out: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (name, *(_cell(rec.get(k)) for k in COLUMNS), what_happened(rec))
        for name, rec in out.get("faults", {}).items()
    ]


def table(out: dict[str, Any]) -> str:
    """Fixed-width table for the console."""
    body = rows(out)
    widths = [max(len(r[i]) for r in [HEAD, *body]) for i in range(len(HEAD) - 1)]
    lines = []
    for r in [HEAD, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)


def markdown(out: dict[str, Any]) -> str:
    faults = {k: v for k, v in out.get("faults", {}).items() if k != CONTROL}
    detected = sum(1 for r in faults.values() if r.get("detected"))
    harmless = sum(1 for r in faults.values() if r.get("outcome") == "harmless")
    measured = sum(1 for r in faults.values() if r.get("detected") is not None)
    lines = [
        "# Fault benchmark: a real `embedkd serve` against damaged index folders and hostile requests",
        "",
        f"Command: `{out.get('command')}`",
        "",
        f"Setup: {out.get('setup', {})}",
        "",
        f"Detected: {detected} of {measured} measured faults; harmless though not reported: {harmless}. "
        f"The `{CONTROL}` row is the intact folder through the same probes: 0 wrong, 0 lost.",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|" + "---|" * len(HEAD),
    ]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows(out)]
    lines += [
        "",
        "- detected: refused to start with one `error:` line and no traceback, or a clear JSON error "
        "(damaged state: a JSON 5xx or an unhealthy `/healthz`; oversize bodies: JSON 413; unauthenticated "
        "`role=document`: JSON 401/403; huge searches and strings in `k`/`include_text`: JSON 4xx/422 to "
        "every probe; disk full: every failed write a JSON error; kill -9: the restart "
        "refused with one error line; what counts there is acked lost).",
        "- outcome: detected; harmless (not reported, but no wrong result, no loss, no plain 500, no "
        "traceback: e.g. a removed `-wal` whose writes were already checkpointed); NOT DETECTED (a hostile "
        "request accepted, or damage served silently).",
        "- wrong: searches that returned an acknowledged-deleted document or missed an acknowledged upsert "
        "or an untouched indexed document; acked lost: acknowledged upserts `GET /documents/{id}` no longer "
        "finds plus acknowledged deletes it finds again.",
        f"- Total run time: {out.get('seconds', '?')} s.",
        "",
    ]
    return "\n".join(lines)

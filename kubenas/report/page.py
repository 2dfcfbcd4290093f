"""``report.html``: one self-contained page (inline CSS, SVG and a few lines of JS; nothing
fetched) a person would rather look at than read: the reward chart, the comparison with a
baseline search, the best architecture drawn, the leaderboard (sortable), the final phase
(its grid, the retrain and the one test evaluation) and the cost of each phase."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Optional

from kubenas.contracts.result import cost_text
from kubenas.local.report import LEADERBOARD_COLUMNS, device_label, leaderboard_rows
from kubenas.report.assets import CSS, SORTABLE_JS
from kubenas.report.chart import reward_chart, running_best
from kubenas.report.data import Run
from kubenas.report.drawing import architecture_drawing

TABLE_COLUMNS = LEADERBOARD_COLUMNS + ("policy_version",)


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _header(run: Run) -> str:
    ok = sum(r.succeeded for r in run.results)
    best = run.best
    facts = [("strategy", run.strategy or "unknown"), ("trials", str(len(run.results))),
             ("succeeded", str(ok)), ("failed", str(len(run.results) - ok)),
             ("best", f"{best.reward:.4f} ({best.trial_id})" if best else "none"),
             ("cost", cost_text(run.cost))]
    test = (run.final or {}).get("test") or {}
    metric = test.get("metric", "accuracy")
    if isinstance(test.get(metric), (int, float)):
        facts.append((f"test {metric}", f"{test[metric]:.4f} (final model, evaluated once)"))
    items = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    return f"<header><h1>{escape(run.name)}</h1><dl class=\"facts\">{items}</dl></header>"


def _legend(baseline: Optional[Run]) -> str:
    words = ('<span class="key dot"></span> a trial\'s reward, coloured by the policy version '
             'that sampled it (blue: early, orange: late) · <span class="key best"></span> '
             'running best · × failed')
    if baseline is not None:
        words += f' · <span class="key baseline"></span> {escape(baseline.name)} running best'
    return f'<p class="legend">{words}</p>'


def _summary_row(run: Run) -> str:
    best_so_far = running_best(run)
    best = run.best
    found = next((i for i, b in enumerate(best_so_far) if best and b == best.reward), None)
    rewards = [r.reward for r in run.results if r.succeeded]
    mean = sum(rewards) / len(rewards) if rewards else None
    cells = [run.name, run.strategy or "?", len(run.results),
             f"{best.reward:.4f}" if best else "", "" if found is None else found,
             "" if mean is None else f"{mean:.4f}"]
    return "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>"


def _comparison(run: Run, baseline: Run) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("search", "strategy", "trials", "best reward",
                                             "best found at trial", "mean reward"))
    return (f'<table class="compare" id="comparison"><thead><tr>{head}</tr></thead><tbody>'
            f"{_summary_row(run)}{_summary_row(baseline)}</tbody></table>")


def _best(run: Run) -> str:
    best = run.best
    if best is None:
        return "<p>No trial succeeded.</p>"
    tokens = " ".join(map(str, best.architecture.tokens))
    return (f"<p>{escape(best.trial_id)}: reward {best.reward:.4f}; "
            f"{escape(best.architecture.space)} space; tokens <code>{escape(tokens)}</code></p>"
            f'<div class="drawing">{architecture_drawing(best.architecture)}</div>')


def _leaderboard(run: Run) -> str:
    head = "".join(f'<th data-column="{c}">{escape(c)}</th>' for c in TABLE_COLUMNS)
    rows = []
    for row in leaderboard_rows(run.results):
        version = run.policy_versions.get(row["trial_id"])
        row["policy_version"] = "" if version is None else version
        cells = "".join(f"<td>{escape(str(row[c]))}</td>" for c in TABLE_COLUMNS)
        rows.append(f'<tr class="{escape(row["status"])}">{cells}</tr>')
    return (f'<p class="hint">Click a column to sort.</p><div class="scroll">'
            f'<table class="sortable" id="leaderboard"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _table(anchor: str, head: tuple, rows: list) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return (f'<table class="compare" id="{anchor}"><thead><tr>{cells}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def _final(final: dict) -> str:
    """The final phase: what was chosen, the grid it was chosen from, the retrains."""
    test, chosen = final.get("test") or {}, final.get("chosenGridPoint") or {}
    said = (f"<p>{escape(str(final.get('searchTrial')))}'s architecture, grid point "
            f"{escape(_cell(chosen.get('point')))} (validation reward "
            f"{escape(_cell(chosen.get('reward')))}), retrained with {escape(_cell(final.get('hyperparameters')))}: ")
    metric = test.get("metric", "accuracy")
    said += (f"test {escape(metric)} <strong>{test[metric]:.4f}</strong> on {test.get('examples')} "
             f"examples, evaluated once.</p>" if isinstance(test.get(metric), (int, float))
             else "no retrain succeeded.</p>")
    grid = _table("final-grid", ("trial", "architecture of", "point", "status", "reward", "best val acc"),
                  [(g.get("trial"), g.get("source"), g.get("point"), g.get("status"), g.get("reward"),
                    g.get("bestValAcc")) for g in final.get("grid") or []])
    retrains = _table("final-retrain", ("trial", "size", "status", f"test {metric}", "parameters",
                                        "training seconds"),
                      [(r.get("trial"), r.get("size"), r.get("status"), (r.get("test") or {}).get(metric),
                        r.get("parameters"), r.get("trainingSeconds")) for r in final.get("retrains") or []])
    return f"{said}<h3>Grid</h3>{grid}<h3>Retrain</h3>{retrains}"


def _phase_costs(final: Optional[dict]) -> str:
    costs = (final or {}).get("cost") or {}
    rows = [(phase, c.get("trials"), c.get("cpuSeconds"), c.get("gpuSeconds"))
            for phase in ("search", "grid", "retrain") if isinstance(c := costs.get(phase), dict)]
    return _table("cost-by-phase", ("phase", "trials", "CPU-seconds", "GPU-seconds"), rows) if rows else ""


def _cost(run: Run) -> str:
    by_device: dict[str, list] = {}
    for r in run.results:
        name = device_label(r) or "no cost record"
        seconds = 0.0 if r.cost is None else r.cost.seconds
        by_device.setdefault(name, []).append(seconds)
    rows = "".join(f"<tr><td>{escape(name)}</td><td>{len(s)}</td><td>{sum(s):.1f}</td>"
                   f"<td>{sum(s) / len(s):.1f}</td></tr>" for name, s in sorted(by_device.items()))
    return (f"<p>{escape(cost_text(run.cost))}.</p>"
            '<table class="compare" id="cost-by-device"><thead><tr><th>device</th>'
            "<th>trials</th><th>device-seconds</th><th>per trial</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{_phase_costs(run.final)}")


def render(run: Run, baseline: Optional[Run] = None) -> str:
    """The whole page as one string."""
    sections = [_section("Reward per trial", reward_chart(run, baseline) + _legend(baseline),
                         "rewards")]
    if baseline is not None:
        sections.append(_section(f"Compared with {baseline.name}", _comparison(run, baseline),
                                 "comparison"))
    sections += [_section("Best architecture", _best(run), "best"),
                 _section("Leaderboard", _leaderboard(run), "leaderboard")]
    if run.final is not None:
        sections.append(_section("Final phase", _final(run.final), "final"))
    sections.append(_section("Cost", _cost(run), "cost"))
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>kubenas report: {escape(run.name)}</title>"
            f"<style>{CSS}</style></head><body>"
            f"{_header(run)}{''.join(sections)}"
            f"<footer>made by kubenas report, {made}</footer>"
            f"<script>{SORTABLE_JS}</script></body></html>")


def write_report(path: Path, run: Run, baseline: Optional[Run] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run, baseline), encoding="utf-8")
    return path

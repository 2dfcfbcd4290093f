"""The reward chart: every trial's reward in sample order, coloured by the policy version
that sampled it, the running best as a step line, and a baseline's running best (a random
search of the same space) dashed beside it."""

from __future__ import annotations

from html import escape
from typing import Optional

from kubenas.report.data import Run
from kubenas.report.svg import element, palette, svg, text

WIDTH, HEIGHT = 900, 360
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 20, 50   # plot margins


def running_best(run: Run) -> list[Optional[float]]:
    """The best reward after each trial (None until one succeeded)."""
    best, out = None, []
    for r in run.results:
        if r.succeeded and (best is None or r.reward > best):
            best = r.reward
        out.append(best)
    return out


class _Axes:
    """Data -> pixel coordinates of the plot area."""

    def __init__(self, trials: int, low: float, high: float) -> None:
        self.trials, self.low, self.high = max(trials, 2), low, high if high > low else low + 1

    def x(self, i: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * i / (self.trials - 1)

    def y(self, value: float) -> float:
        span = self.high - self.low
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (value - self.low) / span


def _ticks(axes: _Axes) -> list[str]:
    out = []
    for k in range(5):
        value = axes.low + (axes.high - axes.low) * k / 4
        y = axes.y(value)
        out.append(element("line", x1=LEFT, x2=WIDTH - RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}",
                           class_="grid"))
        out.append(text(LEFT - 6, y + 4, f"{value:.3f}", class_="tick", text_anchor="end"))
    step = max(1, round(axes.trials / 8))
    for i in range(0, axes.trials, step):
        out.append(text(axes.x(i), HEIGHT - BOTTOM + 16, str(i), class_="tick",
                        text_anchor="middle"))
    out.append(text(WIDTH / 2, HEIGHT - 12, "trial (sample order)", class_="label",
                    text_anchor="middle"))
    return out


def _step_line(values: list[Optional[float]], axes: _Axes, css: str) -> str:
    points, previous = [], None
    for i, v in enumerate(values):
        if v is None:
            continue
        if previous is not None:
            points.append(f"{axes.x(i):.1f},{axes.y(previous):.1f}")
        points.append(f"{axes.x(i):.1f},{axes.y(v):.1f}")
        previous = v
    return element("polyline", points=" ".join(points), class_=css) if points else ""


def _points(run: Run, axes: _Axes) -> list[str]:
    versions = [v for v in run.policy_versions.values() if v is not None]
    top = max(versions, default=0) or 1
    out = []
    for i, r in enumerate(run.results):
        version = run.policy_versions.get(r.trial_id)
        tip = f"{r.trial_id}: " + (f"reward {r.reward:.4f}" if r.succeeded else "failed") + \
            ("" if version is None else f", policy version {version}")
        if r.succeeded:
            out.append(element("circle", element("title", escape(tip)), cx=f"{axes.x(i):.1f}",
                               cy=f"{axes.y(r.reward):.1f}", r=4,
                               fill=palette((version or 0) / top), class_="trial"))
        else:
            out.append(text(axes.x(i), axes.y(axes.low) + 4, "×", class_="failed",
                            text_anchor="middle"))
    return out


def reward_chart(run: Run, baseline: Optional[Run] = None) -> str:
    """The chart as inline SVG."""
    rewards = [r.reward for r in run.results if r.succeeded]
    if baseline is not None:
        rewards += [r.reward for r in baseline.results if r.succeeded]
    axes = _Axes(max(len(run.results), len(baseline.results) if baseline else 0),
                 min(rewards, default=0.0), max(rewards, default=1.0))
    body = _ticks(axes) + _points(run, axes)
    body.append(_step_line(running_best(run), axes, "best"))
    if baseline is not None:
        body.append(_step_line(running_best(baseline), axes, "baseline"))
    label = f"reward per trial of {run.name}, running best" + \
        (f", and {baseline.name}'s running best" if baseline else "")
    return svg(WIDTH, HEIGHT, body, label)

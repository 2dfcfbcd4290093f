"""A few SVG elements as strings: every text and attribute value escaped (a child's failure
reason or a layer name must never become markup)."""

from __future__ import annotations

from html import escape


def _attrs(attrs: dict) -> str:
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"'
                   for k, v in attrs.items() if v is not None)


def element(tag: str, content: str = "", **attrs) -> str:
    """``<tag attrs>content</tag>``; ``content`` is markup already (escape text with text())."""
    return f"<{tag}{_attrs(attrs)}>{content}</{tag}>"


def text(x: float, y: float, words: str, **attrs) -> str:
    return element("text", escape(words), x=f"{x:.1f}", y=f"{y:.1f}", **attrs)


def svg(width: float, height: float, body: list[str], label: str) -> str:
    """A standalone ``<svg>`` with a title (what screen readers and tooltips say)."""
    return element("svg", element("title", escape(label)) + "".join(body), width=f"{width:.0f}",
                   height=f"{height:.0f}", viewBox=f"0 0 {width:.0f} {height:.0f}",
                   role="img", class_="figure")


def palette(fraction: float) -> str:
    """A colour from blue (0) to orange (1): early to late policy versions."""
    f = min(1.0, max(0.0, fraction))
    start, end = (49, 104, 189), (230, 120, 30)
    r, g, b = (round(a + (z - a) * f) for a, z in zip(start, end))
    return f"#{r:02x}{g:02x}{b:02x}"

"""Drawings of an architecture as inline SVG.

* CNN: the layers top to bottom (input first), each box saying its type, filter size, filter
  count and stride; an input from the layer just above is a straight arrow, any other input
  (a skip connection) an arc on the right; the layers no later layer consumes feed the
  classifier (concatenated, globally pooled) at the bottom.
* Recurrent cell: the binary tree of §3.5 — leaves (each combining x_t and h_{t-1}) at the
  bottom, the root (h_t) at the top, each node its combination and activation; the node
  c_{t-1} is injected into and the one c_t is taken from are marked.
* ENAS macro (``enas_macro``): the stem, then each layer's op, the previous layer an
  arrow, each skip an arc; the fixed 2×2 max-pools after the layers that have one.
* ENAS recurrent cell (``enas_rnn``): its nodes top to bottom, each its activation and an
  arrow or arc from the node it reads (the first reads x_t and h_{t-1}); the loose ends
  (nodes no other reads) averaged into h_t at the bottom.
* Anything else: its spec as a key/value list.
"""

from __future__ import annotations

from html import escape

from kubenas.contracts import Architecture
from kubenas.report.svg import element, svg, text

BOX_W, BOX_H, GAP, PAD = 300, 30, 22, 20


def describe_layer(layer: dict) -> str:
    """One line per layer: "conv 3×5, 36 filters" (plus the stride when it is not 1)."""
    kind = layer.get("type", "conv")
    words = f"{kind} {layer['filter_height']}×{layer['filter_width']}"
    if kind == "conv":
        words += f", {layer['num_filters']} filters"
    stride = (layer.get("stride_height", 1), layer.get("stride_width", 1))
    if stride != (1, 1):
        words += f", stride {stride[0]}×{stride[1]}"
    return words


def _box(y: float, title: str, words: str, css: str) -> str:
    return (element("rect", x=PAD, y=f"{y:.1f}", width=BOX_W, height=BOX_H, rx=5, class_=css)
            + text(PAD + 10, y + 19, title, class_="name")
            + text(PAD + BOX_W - 10, y + 19, words, class_="what", text_anchor="end"))


def _arc(y_from: float, y_to: float, lane: int) -> str:
    """From the bottom right of one box to the top right of a later one, ``lane`` deep."""
    x = PAD + BOX_W
    reach = 24 + 14 * lane
    return element("path", d=f"M{x},{y_from:.1f} C{x + reach},{y_from:.1f} "
                   f"{x + reach},{y_to:.1f} {x},{y_to:.1f}", class_="skip")


def _arrow(y_from: float, y_to: float) -> str:
    x = PAD + BOX_W / 2
    return element("line", x1=x, x2=x, y1=f"{y_from:.1f}", y2=f"{y_to:.1f}", class_="edge")


_ENAS_OP_CSS = {"max": "maxpool", "avg": "avgpool"}   # the CNN's pool colours


def enas_op_words(op: str) -> str:
    """An ENAS op's name (``contracts.architecture.ENAS_OPS``) as words: "sep_conv3x3" ->
    "sep conv 3×3", "maxpool3x3" -> "max pool 3×3"."""
    kind, size = op[:-3], op[-3:]
    return f"{kind.replace('_', ' ').replace('pool', ' pool')} {size.replace('x', '×')}"


def _column(first: tuple, rows: list, last: tuple, outputs: list) -> tuple[list, int, float]:
    """Boxes top to bottom: ``first`` and ``last`` are (title, words, css); ``rows`` are
    (title, words, css, sources); a source that is the row just above is an arrow, any other
    an arc; ``outputs`` feed ``last``. Returns (svg body, arcs drawn, height)."""
    names = [first[0]] + [r[0] for r in rows]
    top = {name: PAD + i * (BOX_H + GAP) for i, name in enumerate(names)}
    body, arcs = [_box(top[first[0]], *first)], 0

    def links(sources: list, above: str, y_to: float) -> None:
        nonlocal arcs
        arrowed = False      # a second edge from the row above (an ENAS skip to it) is an arc
        for src in sources:
            if src == above and not arrowed:
                body.append(_arrow(top[src] + BOX_H, y_to))
                arrowed = True
            else:
                body.append(_arc(top[src] + BOX_H / 2, y_to + BOX_H / 2, arcs % 12))
                arcs += 1
    for i, (title, words, css, sources) in enumerate(rows, 1):
        links(sources, names[i - 1], top[title])
        body.append(_box(top[title], title, words, css))
    y_out = PAD + len(names) * (BOX_H + GAP)
    links(outputs, names[-1], y_out)
    body.append(_box(y_out, *last))
    return body, arcs, y_out + BOX_H + PAD


def enas_macro_drawing(architecture: Architecture) -> str:
    spec = architecture.spec
    pooled = {int(i) for i in spec.get("pooling_at", [])}
    rows, above = [], "stem"
    for i, layer in enumerate(spec["layers"], 1):
        words = enas_op_words(layer["op"])
        rows.append((layer["name"], words + (" → max pool 2×2" if i in pooled else ""),
                     _ENAS_OP_CSS.get(layer["op"][:3], "conv"), [above] + layer.get("skips", [])))
        above = layer["name"]
    body, arcs, height = _column(("stem", f"conv 3×3, {spec.get('channels', '?')} channels", "input"),
                                 rows, ("classifier", "global pool → linear → softmax", "output"),
                                 [above])
    label = f"ENAS macro CNN of {len(rows)} layers, {arcs} skip connections"
    return svg(PAD * 2 + BOX_W + 180, height, body, label)


def enas_rnn_drawing(architecture: Architecture) -> str:
    nodes, first = architecture.spec["nodes"], "x_t, h_{t-1}"   # what node_1 reads
    read = {n.get("input") for n in nodes}
    rows = [(n["name"], n["activation"], "node", [n.get("input") or first]) for n in nodes]
    loose = [n["name"] for n in nodes if n["name"] not in read]
    body, _, height = _column((first, "input", "input"), rows,
                              ("h_t", f"mean of {len(loose)} loose ends", "output"), loose)
    return svg(PAD * 2 + BOX_W + 180, height, body, f"ENAS recurrent cell of {len(nodes)} nodes")


def cnn_drawing(architecture: Architecture) -> str:
    layers = architecture.spec["layers"]
    rows = [(l["name"], describe_layer(l), l.get("type", "conv"), l.get("inputs") or ["input"])
            for l in layers]                      # no inputs: the image (as the builder)
    consumed = {src for row in rows for src in row[3]}
    outputs = [l["name"] for l in layers if l["name"] not in consumed]
    body, arcs, height = _column(("input", "image", "input"), rows,
                                 ("classifier", f"concat {len(outputs)} → global pool → softmax",
                                  "output"), outputs)
    label = f"CNN of {len(layers)} layers, {arcs} skip connections"
    return svg(PAD * 2 + BOX_W + 180, height, body, label)


def _tree_positions(base: int, width: float, height: float) -> dict[int, tuple[float, float]]:
    """Node index -> centre: leaves evenly along the bottom, each parent above its two."""
    pos, level, nodes, y = {}, list(range(base)), 2 * base - 1, height - 50
    for k, node in enumerate(level):
        pos[node] = (width * (k + 0.5) / base, y)
    step = (height - 100) / max(1, (base - 1).bit_length())
    next_node = base
    while next_node < nodes:
        y -= step
        parents = []
        for k in range(0, len(level), 2):
            left, right = pos[level[k]][0], pos[level[k + 1]][0]
            pos[next_node] = ((left + right) / 2, y)
            parents.append(next_node)
            next_node += 1
        level = parents
    return pos


def rnn_cell_drawing(architecture: Architecture) -> str:
    spec = architecture.spec
    base, nodes = spec["base"], spec["nodes"]
    inject, take = spec["cell_inject"], spec["cell_index"]
    width, height = max(520, 150 * base), 120 + 90 * (base - 1).bit_length() + 60
    pos = _tree_positions(base, width, height)
    body = []
    for parent in range(base, len(nodes)):
        for child in (2 * (parent - base), 2 * (parent - base) + 1):
            body.append(element("line", x1=f"{pos[child][0]:.1f}", y1=f"{pos[child][1]:.1f}",
                                x2=f"{pos[parent][0]:.1f}", y2=f"{pos[parent][1]:.1f}",
                                class_="edge"))
    for i, node in enumerate(nodes):
        x, y = pos[i]
        css = "node root" if i == len(nodes) - 1 else "node"
        body.append(element("rect", x=f"{x - 62:.1f}", y=f"{y - 16:.1f}", width=124, height=32,
                            rx=14, class_=css))
        body.append(text(x, y + 5, f"{node['combine']} · {node['activation']}", class_="what",
                         text_anchor="middle"))
        if i < base:
            body.append(text(x, y + 34, "x_t, h_{t-1}", class_="note", text_anchor="middle"))
        if i == inject["node"]:
            body.append(text(x, y - 22, f"+ c_{{t-1}}: {inject['combine']} · "
                             f"{inject['activation']}", class_="mark", text_anchor="middle"))
        if i == take:
            body.append(text(x + 66, y + 5, "→ c_t", class_="mark"))
    x, y = pos[len(nodes) - 1]
    body.append(text(x, y - 24, "h_t", class_="name", text_anchor="middle"))
    return svg(width, height, body, f"recurrent cell, base {base}")


def spec_listing(architecture: Architecture) -> str:
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                   for k, v in sorted(_flat(architecture.spec).items()))
    return f'<table class="spec">{rows}</table>'


def _flat(spec: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


DRAWINGS = {"cnn": cnn_drawing, "rnn_cell": rnn_cell_drawing, "enas_macro": enas_macro_drawing,
            "enas_rnn": enas_rnn_drawing}


def architecture_drawing(architecture: Architecture) -> str:
    """The drawing of ``architecture``'s space, or its spec listed."""
    return DRAWINGS.get(architecture.space, spec_listing)(architecture)

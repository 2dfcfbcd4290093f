"""report.html from a small real search: its tables are the results, its drawing the best
architecture's layers, nothing in it is fetched from anywhere, and headless Chromium renders
it to a page that is not blank (and sorts its leaderboard)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from kubenas.cli import main
from kubenas.contracts import Architecture
from kubenas.controller.results import StoreResultSource
from kubenas.local.report import LEADERBOARD_COLUMNS, write_outputs
from kubenas.contracts.architecture import ENAS_OPS
from kubenas.report.drawing import (architecture_drawing, describe_layer, enas_op_words,
                                    rnn_cell_drawing)
from kubenas.report.page import TABLE_COLUMNS
from kubenas.storage.local import LocalStore

from .conftest import TRIALS


class Page(HTMLParser):
    """The parts of the page a test reads: tables (id -> rows of cell texts), SVG texts and
    elements, and every attribute that could fetch something."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.svg_texts: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._table = self._cell = None
        self._in_text = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = attrs.get("id") or attrs.get("class")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = ""
        self._in_text = tag == "text"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        self._in_text = False if tag == "text" else self._in_text

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_text:
            self.svg_texts.append(data)


def _report(workdir: Path, *args: str) -> str:
    assert main(["report", str(workdir), *args]) == 0
    return (workdir / "report.html").read_text()


def test_the_leaderboard_rows_are_the_results(searches):
    workdir, _ = searches
    page = Page(_report(workdir))
    head, *rows = page.tables["leaderboard"]
    assert head == list(TABLE_COLUMNS) and len(rows) == TRIALS
    records = {r.trial_id: r for r in StoreResultSource(LocalStore(workdir / "store")).all()}
    at = {c: head.index(c) for c in head}
    assert sorted(row[at["trial_id"]] for row in rows) == sorted(records)
    for row in rows:
        r = records[row[at["trial_id"]]]
        assert row[at["status"]] == r.status
        assert row[at["reward"]] == ("" if r.reward is None else f"{r.reward:.6f}")
        assert float(row[at["cpu_seconds"]]) == r.cost.seconds and row[at["gpu_seconds"]] == ""
        assert row[at["reason"]] == (r.reason or "")
    rewards = [float(row[at["reward"]]) for row in rows if row[at["reward"]]]
    assert rewards == sorted(rewards, reverse=True), "best first"
    assert {row[at["policy_version"]] for row in rows} != {""}, "policy versions shown"
    seconds = sum(r.cost.seconds for r in records.values())
    assert page.tables["cost-by-device"][1:] == [
        ["cpu", str(TRIALS), f"{seconds:.1f}", f"{seconds / TRIALS:.1f}"]]


def test_text_from_a_record_is_escaped_and_nothing_is_fetched(searches):
    workdir, _ = searches
    html = _report(workdir)
    assert "<b>layer_2</b>" not in html and "&lt;b&gt;layer_2&lt;/b&gt;" in html
    page = Page(html)
    fetching = [(t, a) for t, a in page.tags for k in ("src", "href", "srcset", "data")
                if k in a]
    assert fetching == [], fetching
    assert not re.search(r"https?://|url\(|@import", html), "no network reference at all"
    assert [t for t, _ in page.tags].count("script") == 1 and "<svg" in html


def test_the_drawing_has_the_best_architectures_layers_and_skips(searches):
    workdir, _ = searches
    page = Page(_report(workdir))
    records = StoreResultSource(LocalStore(workdir / "store")).all()
    best = max((r for r in records if r.succeeded), key=lambda r: r.reward)
    layers = best.architecture.spec["layers"]
    for layer in layers:
        assert layer["name"] in page.svg_texts and describe_layer(layer) in page.svg_texts
    skips = sum(src != prev for layer, prev in zip(layers, ["input"] + [l["name"] for l in layers])
                for src in layer["inputs"] or ["input"])
    used = {src for layer in layers for src in layer["inputs"]}
    unused_early = [l["name"] for l in layers[:-1] if l["name"] not in used]
    arcs = [a for t, a in page.tags if t == "path" and a.get("class") == "skip"]
    assert len(arcs) == skips + len(unused_early)
    assert f"concat {len(unused_early) + 1} → global pool → softmax" in page.svg_texts
    assert describe_layer({"type": "maxpool", "filter_height": 2, "filter_width": 2,
                           "stride_height": 2, "stride_width": 2}) == "maxpool 2×2, stride 2×2"


def test_a_recurrent_cell_is_drawn_as_its_tree():
    cell = Architecture.from_dict({"space": "rnn_cell", "spec": {
        "base": 4, "nodes": [{"combine": c, "activation": a} for c, a in [
            ("add", "tanh"), ("elem_mult", "relu"), ("max", "sigmoid"), ("add", "identity"),
            ("add", "relu"), ("elem_mult", "tanh"), ("add", "sin")]],
        "cell_inject": {"node": 4, "combine": "add", "activation": "relu"}, "cell_index": 1}})
    page = Page(rnn_cell_drawing(cell))
    assert [t for t in page.svg_texts if " · " in t and not t.startswith("+")] == [
        "add · tanh", "elem_mult · relu", "max · sigmoid", "add · identity", "add · relu",
        "elem_mult · tanh", "add · sin"]
    assert page.svg_texts.count("x_t, h_{t-1}") == 4
    assert "+ c_{t-1}: add · relu" in page.svg_texts and "→ c_t" in page.svg_texts
    assert sum(t == "line" for t, _ in page.tags) == 6, "each non-leaf node joins two children"


def _arcs(page):
    return sum(t == "path" and a.get("class") == "skip" for t, a in page.tags)


def test_an_enas_macro_child_is_drawn_with_its_ops_pools_and_every_skip():
    layers = [{"name": "layer_1", "op": "conv5x5", "skips": []},
              {"name": "layer_2", "op": "maxpool3x3", "skips": ["layer_1"]},  # skip = the row above
              {"name": "layer_3", "op": "sep_conv3x3", "skips": ["layer_1", "layer_2"]}]
    arch = Architecture.from_dict({"space": "enas_macro", "spec": {
        "channels": 16, "pooling_at": [2], "layers": layers}})
    page = Page(architecture_drawing(arch))
    assert "conv 5×5" in page.svg_texts and "sep conv 3×3" in page.svg_texts
    assert "max pool 3×3 → max pool 2×2" in page.svg_texts
    assert [enas_op_words(op) for op in ENAS_OPS] == [
        "conv 3×3", "conv 5×5", "sep conv 3×3", "sep conv 5×5", "max pool 3×3", "avg pool 3×3"]
    assert "conv 3×3, 16 channels" in page.svg_texts
    assert _arcs(page) == 3, "every skip is drawn, also one to the layer just above"
    assert sum(t == "line" for t, _ in page.tags) == 4   # stem→1→2→3→classifier
    assert ("rect", "maxpool") in [(t, a.get("class")) for t, a in page.tags]


def test_an_enas_recurrent_cell_is_drawn_with_its_inputs_and_loose_ends():
    nodes = [{"name": "node_1", "activation": "tanh"},
             {"name": "node_2", "input": "node_1", "activation": "relu"},
             {"name": "node_3", "input": "node_1", "activation": "sigmoid"},
             {"name": "node_4", "input": "node_3", "activation": "identity"}]
    page = Page(architecture_drawing(Architecture.from_dict({"space": "enas_rnn",
                                                             "spec": {"nodes": nodes}})))
    assert [t for t in page.svg_texts if t in ("tanh", "relu", "sigmoid", "identity")] == \
        ["tanh", "relu", "sigmoid", "identity"]
    assert "mean of 2 loose ends" in page.svg_texts          # node_2 and node_4
    # arcs: node_1 -> node_3 (not the node above) and node_2 -> h_t (not the last)
    assert _arcs(page) == 2


def test_a_baseline_search_is_compared(searches):
    workdir, baseline = searches
    page = Page(_report(workdir, "--baseline", str(baseline)))
    _, ours, theirs = page.tables["comparison"]
    assert ours[:3] == ["tiny", "reinforce", str(TRIALS)]
    assert theirs[:3] == ["tiny-random", "random", str(TRIALS)]
    lines = [a for t, a in page.tags if t == "polyline"]
    assert [a["class"] for a in lines] == ["best", "baseline"]


def test_every_searchs_outputs_include_the_report(searches, tmp_path):
    workdir, _ = searches
    store = LocalStore(workdir / "store")
    summary = write_outputs(StoreResultSource(store).all(), store, tmp_path)
    assert summary["cost"]["trials"] == TRIALS
    head = Page((tmp_path / "report.html").read_text()).tables["leaderboard"][0]
    assert head[:len(LEADERBOARD_COLUMNS)] == list(LEADERBOARD_COLUMNS)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: `make dev-tools` installs it (Debian chromium)"
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def test_chromium_renders_a_page_with_content_and_sorts_on_request(searches, tmp_path):
    workdir, _ = searches
    report = Path(_report(workdir) and workdir / "report.html")
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    counts = image.getcolors(maxcolors=image.width * image.height)
    colours = len(counts)
    ink = sum(n for n, rgb in counts if min(rgb) < 200) / (image.width * image.height)
    assert colours > 100 and ink > 0.03, (colours, ink)
    dom = _chromium("--dump-dom", report.as_uri() + "#sort=-cpu_seconds").stdout
    ids_costs = re.findall(r'<td>(tiny-\d{5})</td>(?:<td>[^<]*</td>){7}<td>([\d.]+)</td>', dom)
    costs = [float(c) for _, c in ids_costs]
    assert len(costs) == TRIALS and costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def test_the_command_takes_a_file_url_and_refuses_a_missing_directory(searches, tmp_path, capsys):
    workdir, _ = searches
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", workdir.as_uri(), "--out", str(out)]) == 0
    assert "leaderboard" in Page(out.read_text()).tables
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such work directory or store" in capsys.readouterr().err


def test_results_without_a_controller_state_still_make_a_report(tmp_path):
    from kubenas.contracts import ResultRecord, result_key

    store = LocalStore(tmp_path / "store")
    arch = Architecture.from_dict({"space": "nasbench201", "spec": {"edges": {
        e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}}})
    for i, reward in enumerate([0.2, 0.6, 0.4]):
        store.put_new(result_key(f"bare-{i:05d}"), ResultRecord(
            experiment="bare", trial_id=f"bare-{i:05d}", architecture=arch,
            status="succeeded", reward=reward).to_json())
    page = Page(_report(tmp_path))
    rows = page.tables["leaderboard"][1:]
    assert [r[1] for r in rows] == ["bare-00001", "bare-00002", "bare-00000"]
    assert "conv_3x3" in "".join(c for row in page.tables["spec"] for c in row)

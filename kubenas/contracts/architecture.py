"""The architecture description: what the controller samples and the trainer builds.

A versioned, human-readable document (the layer list of the paper's §3.1) with the compact
token form beside it. It is plain JSON/YAML so it travels unchanged through a Trial object,
a Job's arguments, a result record and a file on disk.

    {
      "apiVersion": "kubenas.dev/v1",
      "kind": "Architecture",
      "space": "cnn",                     # cnn | rnn_cell | nasbench201 | enas_macro
      "tokens": [3, 1, 2, 0, ...],        # compact form: the controller's action indices
      "spec": {...}                       # space-specific, validated below
    }

CNN spec (§3.1, §3.4):
    {"layers": [{"name": "layer_1", "type": "conv", "inputs": ["input"],
                 "filter_height": 3, "filter_width": 5, "stride_height": 1,
                 "stride_width": 1, "num_filters": 36},
                {"name": "pool_1", "type": "maxpool", "inputs": ["layer_1"],
                 "filter_height": 2, "filter_width": 2, "stride_height": 2, "stride_width": 2},
                ...]}
    A layer's ``inputs`` name earlier layers or "input" (the image).  The classifier is not
    listed: every layer no later layer consumes is concatenated before global pooling.

RNN cell spec (§3.5):
    {"base": 2,
     "nodes": [{"combine": "add", "activation": "tanh"}, ...],   # 2*base-1 nodes, tree order
     "cell_inject": {"node": 0, "combine": "add", "activation": "relu"},
     "cell_index": 1}
    Node order: the ``base`` leaves first (index 0..base-1), then each level of the binary
    tree left to right; node ``base + k`` combines nodes ``2k`` and ``2k+1``; the last node
    is the root whose output is h_t. ``cell_inject`` replaces node j's post-activation
    output, for its parent, with act_inj(combine_inj(out_j, c_{t-1})); ``cell_index`` takes
    node m's combination of its inputs (leaves: of W x_t and U h_{t-1}) before its activation
    and before any injection, as c_t. Biases are a trainer setting, not part of the cell.

ENAS macro spec (Pham et al. 2018): {"channels": 16, "pooling_at": [2, 4],
    "layers": [{"name": "layer_1", "op": "conv3x3", "skips": []}, ...]}
    Layer k's op reads layer k-1 (the stem for the first); ``skips`` name earlier layers
    added to its output (kubenas.controller.spaces.enas_macro); ops from ``ENAS_OPS``; a
    fixed 2x2 max-pool follows every layer number in ``pooling_at``.

ENAS recurrent cell spec (Pham et al. 2018, §2.2): {"nodes": [{"name": "node_1",
    "activation": "tanh"}, {"name": "node_2", "input": "node_1", "activation": "relu"}, ...]}
    Node 1 reads x_t and h_{t-1}; node k > 1 reads the earlier node ``input``; activations
    from ``ENAS_RNN_ACTIVATIONS``; h_t is the mean of the nodes no other node reads
    (kubenas.controller.spaces.enas_rnn).

NAS-Bench-201 spec: {"edges": {"1<-0": "conv_3x3", "2<-0": ..., "2<-1": ..., "3<-0": ...,
    "3<-1": ..., "3<-2": ...}} with ops from ``NB201_OPS``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Mapping

from kubenas.contracts.errors import ContractError
from kubenas.contracts.fields import integer, is_int, require
from kubenas.contracts.names import SPACES

API_VERSION = "kubenas.dev/v1"
KIND = "Architecture"

CNN_LAYER_TYPES = ("conv", "maxpool", "avgpool")
RNN_COMBINES = ("add", "elem_mult", "max")
RNN_ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu", "sin")
NB201_OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")
NB201_EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
# ENAS recurrent cell activations (Pham et al. 2018, §2.2).
ENAS_RNN_ACTIVATIONS = ("tanh", "relu", "identity", "sigmoid")
# ENAS macro space ops (Pham et al. 2018): every one keeps channels and spatial size.
ENAS_OPS = ("conv3x3", "conv5x5", "sep_conv3x3", "sep_conv5x5", "maxpool3x3", "avgpool3x3")


@dataclass(frozen=True)
class Architecture:
    space: str
    spec: dict
    tokens: list = field(default_factory=list)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "space": self.space,
            "tokens": list(self.tokens),
            "spec": copy.deepcopy(self.spec),
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, doc: Mapping, where: str = "architecture") -> "Architecture":
        require(isinstance(doc, Mapping), where, f"must be a mapping, got {type(doc).__name__}")
        api = doc.get("apiVersion", API_VERSION)
        require(api == API_VERSION, f"{where}.apiVersion",
                f"unsupported version {api!r} (this kubenas reads {API_VERSION!r})")
        kind = doc.get("kind", KIND)
        require(kind == KIND, f"{where}.kind", f"must be {KIND!r}, got {kind!r}")
        space = doc.get("space")
        require(space in SPACES, f"{where}.space", f"must be one of {list(SPACES)}, got {space!r}")
        tokens = doc.get("tokens", [])
        require(isinstance(tokens, list) and all(is_int(t) for t in tokens),
                f"{where}.tokens", "must be a list of integers")
        spec = doc.get("spec")
        require(isinstance(spec, Mapping), f"{where}.spec", "is required and must be a mapping")
        VALIDATORS[space](spec, f"{where}.spec")
        return cls(space=space, spec=copy.deepcopy(dict(spec)), tokens=list(tokens))

    @classmethod
    def from_json(cls, text: str, where: str = "architecture") -> "Architecture":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{where}: not valid JSON ({exc})") from exc
        return cls.from_dict(doc, where)

    def key(self) -> str:
        """A stable identity for caching and de-duplication (spec only, canonical JSON)."""
        return json.dumps({"space": self.space, "spec": self.spec}, sort_keys=True,
                          separators=(",", ":"))


# -- space validators ----------------------------------------------------------------------

def validate_cnn(spec: Mapping, where: str) -> None:
    layers = spec.get("layers")
    require(isinstance(layers, list) and layers, f"{where}.layers", "must be a non-empty list")
    seen = {"input"}
    for i, layer in enumerate(layers):
        w = f"{where}.layers[{i}]"
        require(isinstance(layer, Mapping), w, "must be a mapping")
        name = layer.get("name")
        require(isinstance(name, str) and name, f"{w}.name", "must be a non-empty string")
        require(name not in seen, f"{w}.name", f"duplicate or reserved layer name {name!r}")
        ltype = layer.get("type", "conv")
        require(ltype in CNN_LAYER_TYPES, f"{w}.type",
                f"must be one of {list(CNN_LAYER_TYPES)}, got {ltype!r}")
        inputs = layer.get("inputs", [])
        require(isinstance(inputs, list), f"{w}.inputs", "must be a list of layer names")
        for j, src in enumerate(inputs):
            require(isinstance(src, str) and src in seen, f"{w}.inputs[{j}]",
                    f"{src!r} is not 'input' or an earlier layer's name")
        for key in ("filter_height", "filter_width"):
            integer(layer.get(key), f"{w}.{key}", minimum=1)
        for key in ("stride_height", "stride_width"):
            integer(layer.get(key, 1), f"{w}.{key}", minimum=1)
        if ltype == "conv":
            integer(layer.get("num_filters"), f"{w}.num_filters", minimum=1)
        seen.add(name)


def validate_rnn_cell(spec: Mapping, where: str) -> None:
    base = spec.get("base")
    integer(base, f"{where}.base", minimum=1)
    require(base >= 2 and (base & (base - 1)) == 0, f"{where}.base",
            f"must be a power of two >= 2, got {base}")
    nodes = spec.get("nodes")
    n_nodes = 2 * base - 1
    require(isinstance(nodes, list) and len(nodes) == n_nodes, f"{where}.nodes",
            f"must list {n_nodes} nodes for base {base}")
    for i, node in enumerate(nodes):
        w = f"{where}.nodes[{i}]"
        require(isinstance(node, Mapping), w, "must be a mapping")
        require(node.get("combine") in RNN_COMBINES, f"{w}.combine",
                f"must be one of {list(RNN_COMBINES)}, got {node.get('combine')!r}")
        require(node.get("activation") in RNN_ACTIVATIONS, f"{w}.activation",
                f"must be one of {list(RNN_ACTIVATIONS)}, got {node.get('activation')!r}")
    inject = spec.get("cell_inject")
    require(isinstance(inject, Mapping), f"{where}.cell_inject", "is required")
    node = inject.get("node")
    require(isinstance(node, int) and 0 <= node < n_nodes - 1, f"{where}.cell_inject.node",
            f"must be a non-root node index in [0, {n_nodes - 2}], got {node!r}")
    require(inject.get("combine") in RNN_COMBINES, f"{where}.cell_inject.combine",
            f"must be one of {list(RNN_COMBINES)}")
    require(inject.get("activation") in RNN_ACTIVATIONS, f"{where}.cell_inject.activation",
            f"must be one of {list(RNN_ACTIVATIONS)}")
    idx = spec.get("cell_index")
    require(isinstance(idx, int) and 0 <= idx < n_nodes - 1, f"{where}.cell_index",
            f"must be a non-root node index in [0, {n_nodes - 2}], got {idx!r}")


def validate_nasbench201(spec: Mapping, where: str) -> None:
    edges = spec.get("edges")
    require(isinstance(edges, Mapping), f"{where}.edges", "must be a mapping")
    require(set(edges) == set(NB201_EDGES), f"{where}.edges",
            f"must have exactly the edges {list(NB201_EDGES)}")
    for e in NB201_EDGES:
        require(edges[e] in NB201_OPS, f"{where}.edges[{e!r}]",
                f"must be one of {list(NB201_OPS)}, got {edges[e]!r}")


def validate_enas_macro(spec: Mapping, where: str) -> None:
    integer(spec.get("channels"), f"{where}.channels", minimum=1)
    layers = spec.get("layers")
    require(isinstance(layers, list) and layers, f"{where}.layers", "must be a non-empty list")
    pools = spec.get("pooling_at", [])
    require(isinstance(pools, list) and all(is_int(k) and 1 <= k < len(layers) for k in pools)
            and pools == sorted(set(pools)), f"{where}.pooling_at",
            f"must be increasing layer numbers in [1, {len(layers) - 1}], got {pools!r}")
    for i, layer in enumerate(layers):
        w = f"{where}.layers[{i}]"
        require(isinstance(layer, Mapping), w, "must be a mapping")
        require(layer.get("name") == f"layer_{i + 1}", f"{w}.name",
                f"must be 'layer_{i + 1}', got {layer.get('name')!r}")
        require(layer.get("op") in ENAS_OPS, f"{w}.op",
                f"must be one of {list(ENAS_OPS)}, got {layer.get('op')!r}")
        skips = layer.get("skips", [])
        earlier = [f"layer_{j + 1}" for j in range(i)]
        require(isinstance(skips, list) and all(s in earlier for s in skips)
                and len(set(skips)) == len(skips), f"{w}.skips",
                f"must be distinct names of earlier layers, got {skips!r}")


def validate_enas_rnn(spec: Mapping, where: str) -> None:
    nodes = spec.get("nodes")
    require(isinstance(nodes, list) and nodes, f"{where}.nodes", "must be a non-empty list")
    for i, node in enumerate(nodes):
        w = f"{where}.nodes[{i}]"
        require(isinstance(node, Mapping), w, "must be a mapping")
        require(node.get("name") == f"node_{i + 1}", f"{w}.name",
                f"must be 'node_{i + 1}', got {node.get('name')!r}")
        require(node.get("activation") in ENAS_RNN_ACTIVATIONS, f"{w}.activation",
                f"must be one of {list(ENAS_RNN_ACTIVATIONS)}, got {node.get('activation')!r}")
        earlier = [f"node_{j + 1}" for j in range(i)]
        if i == 0:
            require("input" not in node, f"{w}.input", "node_1 reads x_t and h_{t-1}; no input")
        else:
            require(node.get("input") in earlier, f"{w}.input",
                    f"must name an earlier node ({', '.join(earlier)}), got {node.get('input')!r}")


VALIDATORS = {"cnn": validate_cnn, "rnn_cell": validate_rnn_cell,
              "nasbench201": validate_nasbench201, "enas_macro": validate_enas_macro,
              "enas_rnn": validate_enas_rnn}

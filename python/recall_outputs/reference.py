"""A reference implementation of the exported towers in numpy.

Reads only an export directory (`runs/<pipeline>/export/<model>/`): `model.safetensors`, the
input layout in `tensors.json` (`layout`), `encoding/` (features.json and the side features'
vocabularies) and `item_embeddings.parquet` (item id -> table row). Inputs are raw: item ids
of the user's history oldest first, the raw user id, the user's and the items' side-table
values (as the pipeline's ingest stage wrote them).

    model = ExportedModel("runs/default/export/youtubednn")
    v = model.user_vector(history=[1193, 661, 914], user_id=1,
                          user={"gender": "F", "age": 1, "occupation": 10})

The layout states every step; this module follows it and nothing else (no pipeline config).
"""

from __future__ import annotations

import bisect
import json
import math
import pathlib
import struct
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq

PADDING, OOV = 0, 1


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (float32 only, as the project writes them)."""
    data = pathlib.Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + end], dtype="<f4")
        tensors[name] = array.reshape(info["shape"]).astype(np.float64)
    return tensors


def l2_normalize(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt((v * v).sum(axis=-1, keepdims=True) + 1e-12)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_list(value: Any) -> list:
    """A list value: a list as it is, a string split on '|' (empty parts dropped)."""
    if _missing(value):
        return []
    if isinstance(value, str):
        return [v for v in value.split("|") if v]
    return list(value)


class Vocabulary:
    """raw value -> encoded index (1 when unknown or missing), from `vocab_<name>.parquet`."""

    def __init__(self, path: pathlib.Path):
        table = pq.read_table(path, columns=["raw", "index"]).to_pydict()
        self.index = dict(zip(table["raw"], table["index"]))

    def __call__(self, value: Any) -> int:
        if _missing(value):
            return OOV
        return self.index.get(value, OOV)


class ExportedModel:
    """One exported model: its tensors, input layout and encodings."""

    def __init__(self, directory: str | pathlib.Path):
        self.dir = pathlib.Path(directory)
        self.tensors = read_safetensors(self.dir / "model.safetensors")
        meta = json.loads((self.dir / "tensors.json").read_text())
        if "layout" not in meta:
            raise ValueError(
                f"{self.dir / 'tensors.json'} has no input layout: export the model again with a newer build"
            )
        self.layout = meta["layout"]
        features = json.loads((self.dir / "encoding" / "features.json").read_text())
        self.features = {
            "user": {f["name"]: f for f in features["user_features"]},
            "item": {f["name"]: f for f in features["item_features"]},
        }
        items = pq.read_table(self.dir / "item_embeddings.parquet", columns=["item_id", "index_key"])
        items = items.to_pydict()
        self.item_ids = items["item_id"]
        self.item_index = dict(zip(items["item_id"], items["index_key"]))
        self._vocabularies: dict[str, Vocabulary] = {}
        self._item_values: dict[str, dict[int, list[int]]] = {}
        self._item_rows: dict[int, Mapping[str, Any]] = {}

    # Encoding raw values -------------------------------------------------------------------

    def vocabulary(self, name: str) -> Vocabulary:
        if name not in self._vocabularies:
            self._vocabularies[name] = Vocabulary(self.dir / "encoding" / f"vocab_{name}.parquet")
        return self._vocabularies[name]

    def encode(self, entity: str, name: str, row: Mapping[str, Any] | None) -> list[int] | float:
        """Feature `name` of a side-table row (None: absent from the side table): the table
        rows it selects (one for a category or bucket, any number for a bag), or the
        standardised value of a dense feature."""
        spec = self.features[entity][name]
        kind = spec["kind"]
        value = None if row is None else row.get(spec.get("source") or name)
        if kind == "categorical":
            if spec.get("first_of_list"):
                values = _as_list(value)
                value = values[0] if values else None
            return [self.vocabulary(name)(value)]
        if kind == "bag":
            vocab = self.vocabulary(name)
            return [vocab(v) for v in _as_list(value)]
        if kind in ("quantile", "boundaries"):
            if _missing(value):
                return [0]
            return [1 + bisect.bisect_right(spec["boundaries"], float(value))]
        if kind == "dense":
            if _missing(value):
                return 0.0
            mean, std = spec["scaling"]
            return float(np.float32((float(np.float32(value)) - mean) / std))
        raise ValueError(f"unknown feature kind {kind!r} of {entity} feature {name}")

    def set_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        """The raw item side table (rows with `item_id` and the item feature columns), which
        history features and DSSM's item tower read."""
        rows = {}
        for row in items:
            index = self.item_index.get(row["item_id"])
            if index is not None:
                rows[index] = row
        self._item_rows = rows
        self._item_values = {
            name: {index: self.encode("item", name, row) for index, row in rows.items()}
            for name in self.features["item"]
        }

    def _item_feature(self, name: str, index: int) -> list[int]:
        if name not in self._item_values:
            raise ValueError(f"item feature {name!r} is needed: call set_items(...) with the raw items first")
        # An item absent from the side table (and the out-of-vocabulary row) has no values.
        return self._item_values[name].get(index, [])

    # The towers ------------------------------------------------------------------------------

    def _pool(self, part: dict, indices: Sequence[int]) -> np.ndarray:
        table = self.tensors[part["table"]]
        if not indices:
            return np.zeros(table.shape[1])
        total = table[list(indices)].sum(axis=0)
        return total / len(indices) if part["pooling"] == "mean" else total

    def _parts(self, parts: list[dict], history: list[int], user_id: Any, user: Mapping | None,
               item: int | None) -> np.ndarray:
        out = []
        for part in parts:
            op = part["op"]
            if op == "pool":
                over = history if part["over"] == "history" else [item]
                if "newest" in part:
                    over = over[len(over) - min(part["newest"], len(over)) :]
                if "feature" in part:
                    over = [v for i in over for v in self._item_feature(part["feature"], i)]
                out.append(self._pool(part, over))
            elif op == "lookup":
                out.append(self.tensors[part["table"]][self._lookup_row(part, user_id, user, item)])
            elif op == "dense":
                out.append(np.array(self._dense_values(part, user, item)))
            else:
                raise ValueError(f"unknown input op {op!r}")
        return np.concatenate(out) if out else np.zeros(0)

    def _lookup_row(self, part: dict, user_id: Any, user: Mapping | None, item: int | None) -> int:
        """The table row a `lookup` part reads (what the ONNX towers take as that input, but
        for `item_id`, whose cold mapping is inside the item tower's graph)."""
        index = part["index"]
        if index == "user_id":
            return self.vocabulary("user_id")(user_id)
        if index == "user_feature":
            (row,) = self.encode("user", part["feature"], user)
            return row
        if index == "item_id":
            # A cold item (never a training interaction) reads the OOV row.
            if "cold_from" in part and item is not None and item >= part["cold_from"]:
                return part["cold_row"]
            return item
        if index == "item_feature":
            (row,) = self._item_feature(part["feature"], item) or [OOV]
            return row
        return int(index)

    def _dense_values(self, part: dict, user: Mapping | None, item: int | None) -> list[float]:
        """A `dense` part's values: the user's (`item` None) or the item's side-table row."""
        if item is None:
            entity, row = "user", user
        else:
            entity, row = "item", self._item_rows.get(item)
        return [self.encode(entity, n, row) for n in part["features"]]

    def _mlp(self, encoder: dict, x: np.ndarray) -> np.ndarray:
        t = self.tensors
        for layer in encoder["layers"]:
            z = x @ t[layer["weight"]].T
            bn = layer.get("batch_norm")
            if bn:
                z = (z - t[bn["running_mean"]]) / np.sqrt(t[bn["running_var"]] + bn["eps"])
                z = z * t[bn["weight"]] + t[bn["bias"]]
            z = z + t[layer["bias"]]
            activation = layer["activation"]
            if activation == "relu":
                z = np.maximum(z, 0.0)
            elif activation == "prelu":
                z = np.where(z > 0, z, t[layer["prelu"]] * z)
            elif activation != "identity":
                raise ValueError(f"unknown activation {activation!r}")
            x = z
        return x

    def _sequence(self, encoder: dict, window: list[int], side: np.ndarray) -> np.ndarray:
        """A sequence encoder: the front (items, positions, side), then each block's steps."""
        t = self.tensors
        eps, heads, max_len = encoder["layer_norm_eps"], encoder["heads"], encoder["max_len"]
        window = window or [PADDING]
        n = len(window)
        # `input_scale` is absent from layouts written before it existed: 1.
        scale = encoder.get("input_scale", 1.0)
        x = scale * t["item_embedding"][window] + t[encoder["positions"]][max_len - n :]
        if encoder.get("side"):
            x = x + side @ t[encoder["side"]["weight"]].T + t[encoder["side"]["bias"]]
        values = {"x": x}
        for block in encoder["blocks"]:
            for step in block["steps"]:
                self._step(step, values, heads, eps)
        final = encoder["final_norm"]
        return layer_norm(values["x"][-1], t[final["weight"]], t[final["bias"]], eps)

    def _step(self, step: dict, values: dict, heads: int, eps: float) -> None:
        """One step of a sequence block (the layout's step vocabulary) on `values`."""
        t = self.tensors
        op = step["op"]
        if op == "layer_norm":
            values[step["out"]] = layer_norm(values[step["in"]], t[step["weight"]], t[step["bias"]], eps)
        elif op == "linear":
            z = values[step["in"]] @ t[step["weight"]].T + t[step["bias"]]
            activation = step["activation"]
            if activation == "relu":
                z = np.maximum(z, 0.0)
            elif activation == "silu":
                z = z / (1.0 + np.exp(-z))
            elif activation != "identity":
                raise ValueError(f"unknown activation {activation!r}")
            values[step["out"]] = z
        elif op == "split":
            for name, part in zip(step["out"], np.split(values[step["in"]], len(step["out"]), axis=-1)):
                values[name] = part
        elif op in ("add", "mul"):
            a, b = (values[name] for name in step["in"])
            values[step["out"]] = a + b if op == "add" else a * b
        elif op == "attention":
            values[step["out"]] = self._attention(step, values, heads)
        else:
            raise ValueError(f"unknown step {op!r}")

    def _attention(self, step: dict, values: dict, heads: int) -> np.ndarray:
        q, k, v = values[step["q"]], values[step["k"]], values[step["v"]]
        n, dh = q.shape[0], q.shape[1] // heads
        # distance[i, j] = i - j; a query sees itself and earlier positions.
        distance = np.arange(n)[:, None] - np.arange(n)[None, :]
        visible = distance >= 0
        out = []
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            scores = q[:, cols] @ k[:, cols].T
            if step["weighting"] == "softmax":
                scores = np.where(visible, scores * step["scale"], -np.inf)
                p = np.exp(scores - scores.max(axis=1, keepdims=True))
                weights = p / p.sum(axis=1, keepdims=True)
            elif step["weighting"] == "silu":
                bias = self.tensors[step["relative_bias"]]
                if "bias_bucket" in step:  # a bucketed bias: each distance's bucket
                    bias = bias[np.asarray(step["bias_bucket"])]
                z = scores + bias[np.where(visible, distance, 0)]
                weights = np.where(visible, z / (1.0 + np.exp(-z)), 0.0) / step["divide_by"]
            else:
                raise ValueError(f"unknown attention weighting {step['weighting']!r}")
            out.append(weights @ v[:, cols])
        return np.concatenate(out, axis=1)

    def user_vector(self, history: Sequence[Any], user_id: Any = None,
                    user: Mapping[str, Any] | None = None) -> np.ndarray:
        """The user's unit vector from raw inputs: `history` the raw item ids oldest first,
        `user_id` the raw user id, `user` the user's side-table row (None if absent)."""
        layout = self.layout["user_input"]
        indices = [self.item_index.get(i, OOV) for i in history]
        indices = indices[len(indices) - min(layout["history"]["newest"], len(indices)) :]
        x = self._parts(layout["parts"], indices, user_id, user, None)
        encoder = layout["encoder"]
        if encoder["kind"] == "mlp":
            v = self._mlp(encoder, x)
        elif encoder["kind"] == "sequence":
            v = self._sequence(encoder, indices, x)
        else:
            raise ValueError(f"unknown user encoder {encoder['kind']!r}")
        return l2_normalize(v)

    # The ONNX towers' encoded inputs ------------------------------------------------------------

    def user_tower_inputs(self, users: Sequence[tuple[Sequence[Any], Any, Mapping[str, Any] | None]]
                          ) -> dict[str, np.ndarray]:
        """The inputs of `user_tower.onnx` for (history, user_id, user row) triples, raw values
        as for `user_vector`: `history` right-aligned and 0-padded, the other inputs as the
        layout's parts name them. A session takes the ones its graph declares."""
        layout = self.layout["user_input"]
        newest = layout["history"]["newest"]
        history = np.zeros((len(users), newest), dtype=np.int64)
        feeds: dict[str, list] = {}
        for row, (items, user_id, user) in enumerate(users):
            indices = [self.item_index.get(i, OOV) for i in items][-newest:] if newest else []
            if indices:
                history[row, newest - len(indices):] = indices
            for part in layout["parts"]:
                if part["op"] == "lookup" and part["index"] == "user_id":
                    feeds.setdefault("user_id", []).append(self._lookup_row(part, user_id, user, None))
                elif part["op"] == "lookup" and part["index"] == "user_feature":
                    value = self._lookup_row(part, user_id, user, None)
                    feeds.setdefault(f"user_feature.{part['feature']}", []).append(value)
                elif part["op"] == "dense":
                    feeds.setdefault("user_dense", []).append(self._dense_values(part, user, None))
        out = {name: np.array(v, dtype=np.float32 if name == "user_dense" else np.int64)
               for name, v in feeds.items()}
        out["history"] = history
        return out

    def item_tower_inputs(self, item_ids: Sequence[Any]) -> dict[str, np.ndarray]:
        """The inputs of `item_tower.onnx` for raw item ids (with `set_items` called): `item`
        the row (1 when the vocabulary lacks the id), bags 0-padded to the longest."""
        layout = self.layout["item_input"]
        indices = [self.item_index.get(i, OOV) for i in item_ids]
        feeds: dict[str, np.ndarray] = {"item": np.array(indices, dtype=np.int64)}
        for part in layout["parts"]:
            if part["op"] == "lookup" and part["index"] == "item_feature":
                values = [self._lookup_row(part, None, None, i) for i in indices]
                feeds[f"item_feature.{part['feature']}"] = np.array(values, dtype=np.int64)
            elif part["op"] == "pool" and part["over"] == "item":
                bags = [self._item_feature(part["feature"], i) for i in indices]
                padded = np.zeros((len(bags), max(1, max(map(len, bags), default=0))), dtype=np.int64)
                for row, bag in enumerate(bags):
                    padded[row, : len(bag)] = bag
                feeds[f"item_feature.{part['feature']}"] = padded
            elif part["op"] == "dense":
                feeds["item_dense"] = np.array(
                    [self._dense_values(part, None, i) for i in indices], dtype=np.float32)
        return feeds

    def item_vectors(self, item_ids: Sequence[Any] | None = None) -> np.ndarray:
        """Unit vectors of raw item ids (default: every exported item, in the file's order)."""
        layout = self.layout["item_input"]
        item_ids = self.item_ids if item_ids is None else item_ids
        rows = []
        for item in item_ids:
            index = self.item_index.get(item, OOV)
            x = self._parts(layout["parts"], [], None, None, index)
            if layout["encoder"]["kind"] == "mlp":
                x = self._mlp(layout["encoder"], x)
            rows.append(x)
        return l2_normalize(np.array(rows))

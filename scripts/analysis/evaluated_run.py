"""What the offline analyses read from one pipeline run: the encode stage's vocabularies,
sequences and split rows, one model's exported item vectors, and each split row's query
vector through the Python reference (the user tower at the history before the row's target,
as the evaluate stage ranks; `user_embeddings.parquet` is the serving vector, the test items
included). Needs pyarrow and numpy."""
import json
import pathlib
import random
import sys
from math import comb

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "python"))
from recall_outputs.reference import ExportedModel  # noqa: E402

K = 50
FIRST_ITEM = 2  # rows 0 and 1: padding and the unknown id


def bootstrap(values, n=2000, seed=7):
    """95 % bootstrap interval of the mean of `values`."""
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(len(values))] for _ in values) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def random_hit(n, targets, k):
    """Chance that `k` items drawn at random from `n` hold one of `targets` of them."""
    return 1 - comb(n - targets, k) / comb(n, k)


class EvaluatedRun:
    def __init__(self, run, model):
        self.run, enc = run, f"{run}/encode"
        features = json.load(open(f"{enc}/features.json"))
        n_items = features["item_table_size"]
        self.first_cold = n_items - features["stats"]["cold_items"]
        self.items = list(range(FIRST_ITEM, n_items))
        vocab = lambda name: dict(zip(*(pq.read_table(f"{enc}/vocab_{name}.parquet").column(c).to_pylist() for c in ("index", "raw"))))
        self.raw_item, self.raw_user = vocab("item_id"), vocab("user_id")
        seqs = pq.read_table(f"{enc}/sequences.parquet").to_pydict()
        self.items_of = dict(zip(seqs["user_idx"], seqs["items"]))
        self.times_of = dict(zip(seqs["user_idx"], seqs["timestamps"]))
        self.train_len = dict(zip(seqs["user_idx"], seqs["train_len"]))
        self.splits = {}
        for split in ("valid", "test"):
            rows = pq.read_table(f"{enc}/{split}.parquet").to_pydict()
            self.splits[split] = {u: ({self.items_of[u][p]}, p) for u, p in zip(rows["user_idx"], rows["position"])}
        later = pq.read_table(f"{enc}/later_targets.parquet").to_pydict()
        for u, i in zip(later["user_idx"], later["item_idx"]):
            self.splits["test"][u][0].add(i)
        export = f"{run}/export/{model}"
        vectors = pq.read_table(f"{export}/item_embeddings.parquet").to_pydict()
        by_id = dict(zip(vectors["item_id"], vectors["embedding"]))
        self.matrix = np.array([by_id[self.raw_item[i]] for i in self.items], dtype=np.float32)
        self.temperature = json.load(open(f"{run}/train/{model}/config.json"))["temperature"]
        self.reference = ExportedModel(export)
        self.reference.set_items(self._side("item").values())
        self.user_rows = self._side("user")

    def _side(self, entity):
        """The ingested side table, if the dataset has one."""
        path = pathlib.Path(f"{self.run}/ingest/{entity}s.parquet")
        return {r[f"{entity}_id"]: r for r in pq.read_table(path).to_pylist()} if path.exists() else {}

    def rows(self, split):
        """(user, truth set, target position) of each row of `split`; the test truth holds
        every later target too (`encode.test_targets = "after-cut"`)."""
        return [(u, truth, p) for u, (truth, p) in self.splits[split].items()]

    def query_vector(self, user, position):
        raw = self.raw_user[user]
        history = [self.raw_item.get(i) for i in self.items_of[user][:position]]
        return self.reference.user_vector(history, user_id=raw, user=self.user_rows.get(raw)).astype(np.float32)

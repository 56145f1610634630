"""The evaluate stage's item-age prior at serving time (`evaluate.item_age_prior`).

`evaluate/<model>/age_prior.json` holds the weight chosen on validation, the model's
temperature and the fitted log lift of each age bucket; `item_embeddings.parquet` holds each
item's `release_time` (Unix seconds, null without a date). A query served at time `now` ranks
items by

    u . v / temperature + beta * log_lift[bucket(now - release_time)]

which, for unit vectors, is the inner product's ranking after adding `score_bias` to it:

    prior = AgePrior.read("runs/x/evaluate/dssm/age_prior.json")
    ids, items, released = read_items("runs/x/export/dssm/item_embeddings.parquet")
    scores = user_vectors @ items.T + prior.score_bias(released, now)

For an inner-product index, append `prior.score_bias(released, now)` to each item vector as one
more dimension (recomputed once a day: an item's bucket moves with time) and 1 to each user
vector. Needs numpy (and pyarrow for `read_items`).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

SECONDS_PER_DAY = 86_400.0


class AgePrior:
    """One model's fitted prior and chosen weight."""

    def __init__(self, choice: dict):
        self.beta = float(choice["beta"])
        self.temperature = float(choice["temperature"])
        # The K of the validation HitRate the weight was chosen on.
        self.k = int(choice["k"])
        buckets = choice["buckets"]
        aged = [b for b in buckets if b["from_days"] is not None]
        # Buckets come in order: the age buckets by their lower edges, then "not yet released"
        # and "no date".
        self.edges_days = np.array([b["from_days"] for b in aged], dtype=np.float64)
        self.log_lift = np.array([b["log_lift"] for b in buckets], dtype=np.float64)
        names = [b["name"] for b in buckets]
        self.unreleased = names.index("not yet released")
        self.undated = names.index("no date")

    @classmethod
    def read(cls, path: str | pathlib.Path) -> "AgePrior":
        return cls(json.loads(pathlib.Path(path).read_text()))

    def buckets(self, released: np.ndarray, now) -> np.ndarray:
        """Each item's bucket for queries at `now` (Unix seconds, a scalar or a column of
        query times against a row of items); `released` float seconds, NaN without a date."""
        age_days = (np.asarray(now, dtype=np.float64) - released) / SECONDS_PER_DAY
        bucket = np.searchsorted(self.edges_days, age_days, side="right") - 1
        bucket = np.where(bucket < 0, self.unreleased, bucket)
        return np.where(np.isnan(released), self.undated, bucket)

    def logit_bias(self, released: np.ndarray, now) -> np.ndarray:
        """What the prior adds to the logits `u . v / temperature`."""
        return self.beta * self.log_lift[self.buckets(released, now)]

    def score_bias(self, released: np.ndarray, now) -> np.ndarray:
        """What the prior adds to the cosine `u . v` (the logit bias times the temperature)."""
        return self.temperature * self.logit_bias(released, now)


def read_release_times(path: str | pathlib.Path) -> np.ndarray:
    """The `release_time` column of an `item_embeddings.parquet` written with
    `encode.item_release`, float seconds, NaN without a date."""
    import pyarrow.parquet as pq

    times = pq.read_table(path, columns=["release_time"]).column("release_time").to_pylist()
    return np.array([np.nan if t is None else float(t) for t in times])


def read_items(path: str | pathlib.Path) -> tuple[list, np.ndarray, np.ndarray]:
    """Ids, unit vectors and release times (`read_release_times`) of an
    `item_embeddings.parquet` written with `encode.item_release`."""
    from .vector_db import read_vectors

    ids, vectors = read_vectors(path, "item_id")
    return ids, vectors, read_release_times(path)

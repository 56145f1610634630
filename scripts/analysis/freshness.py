#!/usr/bin/env python3
"""Whether MovieLens users turn to new films: for every rating, the film's age at the rating's
time, and the share of ratings on films of an age window against that window's share of the
films released by then (the lift a freshness term in a model could learn). Before and after
the time cut of the `*-cold-start.toml` pipelines. Standard library only.

    RECALL_DATA_DIR=../shared/data python3 scripts/analysis/freshness.py

ml-100k's u.item gives a release date to the day; ml-latest-small's titles give a year only
(taken as 1 July of it), so its windows are in years. MEASUREMENTS.md, "Whether MovieLens
rewards new films" (issue 34).
"""
import bisect
import csv
import datetime as dt
import os
import re

DATA = os.environ.get("RECALL_DATA_DIR", "data")
DAY = 86400
YEAR = 365.25 * DAY


def ml_100k():
    released = {}
    with open(os.path.join(DATA, "ml-100k", "u.item"), encoding="latin-1") as f:
        for line in f:
            fields = line.split("|")
            try:
                when = dt.datetime.strptime(fields[2], "%d-%b-%Y").replace(tzinfo=dt.timezone.utc)
                released[int(fields[0])] = when.timestamp()
            except ValueError:
                pass  # one film has no date
    with open(os.path.join(DATA, "ml-100k", "u.data")) as f:
        ratings = [(int(i), int(t)) for _, i, _, t in (line.split() for line in f)]
    windows = [("0-90 days", 0, 90 * DAY), ("90-365 days", 90 * DAY, 365 * DAY), ("0-365 days", 0, 365 * DAY)]
    return "ml-100k", released, ratings, windows, 880934400  # 1997-12-01


def ml_latest_small():
    released = {}
    with open(os.path.join(DATA, "ml-latest-small", "movies.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            m = re.search(r"\((\d{4})\)\s*$", row["title"].strip())
            if m:
                released[int(row["movieId"])] = dt.datetime(int(m.group(1)), 7, 1, tzinfo=dt.timezone.utc).timestamp()
    with open(os.path.join(DATA, "ml-latest-small", "ratings.csv"), newline="") as f:
        ratings = [(int(r["movieId"]), int(r["timestamp"])) for r in csv.DictReader(f)]
    windows = [("under 1 year", 0, YEAR), ("1-2 years", YEAR, 2 * YEAR), ("under 2 years", 0, 2 * YEAR)]
    return "ml-latest-small", released, ratings, windows, 1483228800  # 2017-01-01


def main():
    for name, released, ratings, windows, cut in (ml_100k(), ml_latest_small()):
        times = sorted(released.values())
        for side, keep in (("before the cut", lambda t: t < cut), ("after the cut", lambda t: t >= cut)):
            rows = [(i, t) for i, t in ratings if keep(t) and i in released]
            for label, lo, hi in windows:
                on = sum(1 for i, t in rows if lo <= t - released[i] < hi) / len(rows)
                # The window's share of the films released by each rating's time, averaged.
                share = 0.0
                for _, t in rows:
                    out = bisect.bisect_right(times, t)
                    inside = bisect.bisect_right(times, t - lo) - bisect.bisect_right(times, t - hi)
                    share += inside / out
                share /= len(rows)
                print(f"{name} {side} ({len(rows)} ratings): films aged {label}: {on:.2%} of the ratings, "
                      f"{share:.2%} of the released films, lift {on / share:.2f}")


if __name__ == "__main__":
    main()

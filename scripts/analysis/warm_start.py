"""Issue 34's warm-start measure from models' `history.json` (a run's `train/<model>/`): for
each pair, the training seconds (validation excluded, summed over the history's entries) until
the warm model's validation HitRate first reaches the scratch model's best, over the scratch
model's seconds to that best; then the ratio of the sums over the pairs where the warm model
reaches it.

Two more views, for pairs that validate on the same schedule (the same data, batch size and
`validations_per_epoch`, so one validation interval costs both models the same training):
- the same ratio counted in validations instead of seconds, free of the timer's noise (each
  interval is a fraction of a second at MovieLens-100K's size);
- the seed-averaged curves: validation HitRate averaged over the pairs at each validation (while
  at least MIN_SHARE of the runs are still training), and the validation at which the warm
  model's averaged curve first reaches the scratch model's averaged maximum. A single run's best
  is the maximum of a noisy curve, so it sits above the level the model holds; averaging the
  curves first measures the level.

Usage: python scripts/analysis/warm_start.py WARM_DIR SCRATCH_DIR [WARM_DIR SCRATCH_DIR ...]
  (for example runs/ml-100k-warm-start/train/youtubednn-warm runs/ml-100k-warm-start/train/youtubednn)
Standard library only.
"""

import json
import pathlib
import statistics
import sys

# Below this share of the runs still training, an averaged point is the mean of the few
# late-stopping runs, not of the seeds.
MIN_SHARE = 0.8


def curve(model: pathlib.Path) -> list:
    """(cumulative training seconds, validation HitRate) after each validation."""
    history = json.loads((model / "history.json").read_text())
    out, seconds = [], 0.0
    for entry in history["epochs"]:
        seconds += entry["seconds"]
        out.append((seconds, entry["valid_hit_rate"]))
    return out


def first_best(points: list) -> int:
    """Index of the earliest maximum of a curve of (x, value) points."""
    return max(range(len(points)), key=lambda i: (points[i][1], -i))


def averaged(curves: list) -> list:
    """(validation number, mean value) at each validation while at least MIN_SHARE of the
    curves reach it: a curve's shape, for `first_best`."""
    out = []
    for i in range(max(map(len, curves))):
        values = [c[i][1] for c in curves if len(c) > i]
        if len(values) < MIN_SHARE * len(curves):
            break
        out.append((i + 1, statistics.mean(values)))
    return out


def main() -> None:
    dirs = [pathlib.Path(a) for a in sys.argv[1:]]
    if not dirs or len(dirs) % 2:
        sys.exit(__doc__)
    pairs = [(curve(w), curve(s), w) for w, s in zip(dirs[::2], dirs[1::2])]
    warm_sum = scratch_sum = 0.0
    warm_count = scratch_count = 0
    reached = 0
    print("warm | scratch best (s) | warm best (s) | warm reaches scratch's best at | ratio | in validations")
    for warm, scratch, warm_dir in pairs:
        name = f"{warm_dir.parent.parent.name}/{warm_dir.name}"
        s_index = first_best(scratch)
        w_index = first_best(warm)
        (s_time, s_best), (w_time, w_best) = scratch[s_index], warm[w_index]
        at = next((i for i, (_, v) in enumerate(warm) if v >= s_best), None)
        if at is None:
            print(f"{name} | {s_best:.4f} ({s_time:.1f}) | {w_best:.4f} ({w_time:.1f}) | never | - | -")
            continue
        reached += 1
        warm_sum += warm[at][0]
        scratch_sum += s_time
        warm_count += at + 1
        scratch_count += s_index + 1
        print(
            f"{name} | {s_best:.4f} ({s_time:.1f}) | {w_best:.4f} ({w_time:.1f}) | {warm[at][0]:.1f} "
            f"| {warm[at][0] / s_time:.2f} | {at + 1}/{s_index + 1}"
        )
    if reached:
        print(
            f"reached in {reached}/{len(pairs)}; summed ratio {warm_sum / scratch_sum:.2f} "
            f"(in validations {warm_count / scratch_count:.2f})"
        )
    else:
        print(f"reached in 0/{len(pairs)}")
    if len(pairs) > 1:
        warm_mean = averaged([w for w, _, _ in pairs])
        scratch_mean = averaged([s for _, s, _ in pairs])
        s_at, s_best = scratch_mean[first_best(scratch_mean)]
        w_best = warm_mean[first_best(warm_mean)][1]
        at = next((n for n, v in warm_mean if v >= s_best), None)
        reach = "never" if at is None else f"at validation {at}, ratio {at / s_at:.2f}"
        print(
            f"averaged over the {len(pairs)} pairs: scratch's maximum {s_best:.4f} at "
            f"validation {s_at}, warm's {w_best:.4f}; the warm curve reaches scratch's "
            f"maximum {reach}"
        )


if __name__ == "__main__":
    main()

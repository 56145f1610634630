"""Issue 34's warm-start measure from models' `history.json` (a run's `train/<model>/`): for
each pair, the training seconds (validation excluded, summed over the history's entries) until
the warm model's validation HitRate first reaches the scratch model's best, over the scratch
model's seconds to that best; then the ratio of the sums over the pairs where the warm model
reaches it.

Usage: python scripts/analysis/warm_start.py WARM_DIR SCRATCH_DIR [WARM_DIR SCRATCH_DIR ...]
  (for example runs/ml-100k-warm-start/train/youtubednn-warm runs/ml-100k-warm-start/train/youtubednn)
Standard library only.
"""

import json
import pathlib
import sys


def curve(model: pathlib.Path) -> list:
    """(cumulative training seconds, validation HitRate) after each validation."""
    history = json.loads((model / "history.json").read_text())
    out, seconds = [], 0.0
    for entry in history["epochs"]:
        seconds += entry["seconds"]
        out.append((seconds, entry["valid_hit_rate"]))
    return out


def main() -> None:
    dirs = [pathlib.Path(a) for a in sys.argv[1:]]
    if not dirs or len(dirs) % 2:
        sys.exit(__doc__)
    pairs = list(zip(dirs[::2], dirs[1::2]))
    warm_sum = scratch_sum = 0.0
    reached = 0
    print("warm | scratch best (s) | warm best (s) | warm reaches scratch's best at | ratio")
    for warm_dir, scratch_dir in pairs:
        scratch, warm = curve(scratch_dir), curve(warm_dir)
        name = f"{warm_dir.parent.parent.name}/{warm_dir.name}"
        s_time, s_best = max(scratch, key=lambda p: (p[1], -p[0]))
        w_time, w_best = max(warm, key=lambda p: (p[1], -p[0]))
        at = next((t for t, v in warm if v >= s_best), None)
        if at is None:
            print(f"{name} | {s_best:.4f} ({s_time:.1f}) | {w_best:.4f} ({w_time:.1f}) | never | -")
            continue
        reached += 1
        warm_sum += at
        scratch_sum += s_time
        print(
            f"{name} | {s_best:.4f} ({s_time:.1f}) | {w_best:.4f} ({w_time:.1f}) | {at:.1f} | {at / s_time:.2f}"
        )
    if reached:
        print(f"reached in {reached}/{len(pairs)}; summed ratio {warm_sum / scratch_sum:.2f}")
    else:
        print(f"reached in 0/{len(pairs)}")


if __name__ == "__main__":
    main()

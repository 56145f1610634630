#!/usr/bin/env bash
# ml-latest-small's cold-start protocol at five time cuts instead of one (a rolling origin):
# `pipelines/ml-latest-small-cold-start.toml` as shipped, `encode.test_from` set to each cut
# listed in MEASUREMENTS.md ("Cold items on MovieLens") before any model ran, only its
# `dssm-cold` model, seeds 42 and 43; then the cold, warm and all-target groups pooled over
# the cuts with scripts/analysis/pooled.py (needs pyarrow), users resampled whole.
#
#   RECALL_DATA_DIR=../shared/data bash scripts/analysis/rolling_cuts.sh /tmp/rolling
#
# MEASUREMENTS.md, "Five cuts of ml-latest-small" (issue 34).
set -euo pipefail
out=${1:?usage: rolling_cuts.sh OUT_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
cargo build --release -q -p xtask --manifest-path "$root/Cargo.toml"
groups=()
for year in 2010 2014 2016 2017 2018; do
  group=""
  for seed in 42 43; do
    name="mls-cut$year-$seed"
    python3 - "$root/pipelines/ml-latest-small-cold-start.toml" "$out/$name.toml" "$year" "$seed" "$name" <<'EOF'
import datetime, re, sys
src, dst, year, seed, name = sys.argv[1:]
text = open(src).read()
head, *rest = re.split(r"(?m)^(?=\[\[models\]\]|\[evaluate\])", text)
cut = int(datetime.datetime(int(year), 1, 1, tzinfo=datetime.timezone.utc).timestamp())
head = re.sub(r"(?m)^test_from = \d+.*$", f"test_from = {cut}", head)
head = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', head, count=1)
head = re.sub(r"(?m)^seed = \d+$", f"seed = {seed}", head, count=1)
kept = [p for p in rest if not p.startswith("[[models]]") or 'name = "dssm-cold"' in p]
open(dst, "w").write(head + "".join(kept))
EOF
    "$root/target/release/xtask" pipeline --config "$out/$name.toml" --runs "$out/runs" > "$out/$name.log" 2>&1
    group="${group:+$group,}$out/runs/$name"
  done
  groups+=("$group")
done
for g in cold warm all; do
  python3 "$root/scripts/analysis/pooled.py" --group "$g" dssm-cold dssm-cold+age-prior "${groups[@]}"
done

#!/usr/bin/env bash
# The prepared GPU check (issue "The CUDA backend"): on a lent GPU machine, with the binary
# scripts/build-cuda.sh built (target/cuda/xtask.gz) and ML-1M under data/ml-1m/ carried
# beside the checkout, runs the ML-1M YoutubeDNN and DSSM pipelines and the shipped sequence
# pipeline (HSTU) on CUDA and prints stage times, training examples/s, seconds per epoch and
# HitRate@50. Copies nothing from the internet. Prepare here:
#   bash scripts/build-cuda.sh
#   mkdir -p data/ml-1m && cp ../shared/data/ml-1m/{interactions.parquet,users.dat,movies.dat} data/ml-1m/
# then with the `run` tool of the device machine (about 22 MB carried):
#   run(command="bash scripts/device-check.sh", carry=["target/cuda/xtask.gz", "data/ml-1m"])
# Each pooling pipeline is capped (PIPELINE_TIMEOUT, default 200 s), the sequence pipeline
# (SEQUENCE_TIMEOUT, default 120 s: its epochs' times are printed even when the cap stops it
# before its last epoch) so the whole check stays inside 9 minutes; the CPU figures to compare with are the same pipelines on this repository's CPU
# machine (MEASUREMENTS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${XTASK_BIN:-target/cuda/xtask}"
if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then
    gunzip -kf "$bin.gz" && chmod +x "$bin"
fi
runs="${RUNS_DIR:-runs-gpu}"
limit="${PIPELINE_TIMEOUT:-200}"
device="${DEVICE:-cuda}"
# A dry run of the script itself on any machine: DEVICE=cpu PIPELINES=default XTASK_BIN=...
pipelines="${PIPELINES:-ml-1m-youtubednn ml-1m-dssm ml-1m-hstu}"
sequence_limit="${SEQUENCE_TIMEOUT:-120}"

# The CUDA libraries of the machine's Python environment (PyTorch's wheels), after the driver's.
libs=$(python3 - <<'PY' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
dirs = []
for root in nvidia.__path__:
    for sub in sorted(os.listdir(root)):
        lib = os.path.join(root, sub, "lib")
        if os.path.isdir(lib):
            dirs.append(lib)
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "binary: $bin"
missing=$(ldd "$bin" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "unresolved libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    echo "$missing" >&2
    exit 1
fi
ldd "$bin" | grep -E "libcuda|cublas|curand|nvrtc|cudart" || true

status=0
for pipeline in $pipelines; do
    echo "== $pipeline on $device"
    start=$(date +%s)
    cap="$limit"
    case "$pipeline" in *sasrec*|*hstu*) cap="$sequence_limit" ;; esac
    RUST_LOG=info timeout "$cap" "$bin" pipeline --config "pipelines/$pipeline.toml" --device "$device" \
        --runs "$runs" --force > "$runs-$pipeline.log" 2>&1
    rc=$?
    echo "exit $rc after $(( $(date +%s) - start )) s (log $runs-$pipeline.log)"
    # Per-epoch seconds and validation HitRate, also when the cap stopped the run.
    sed 's/\x1b\[[0-9;]*m//g' "$runs-$pipeline.log" | grep -o 'epoch done.*' || true
    if [ $rc -eq 124 ] && [ "$cap" = "$sequence_limit" ]; then
        echo "(stopped by the ${cap} s cap: the epoch times above are the figure)"
        continue
    fi
    if [ $rc -ne 0 ]; then
        status=1
        tail -20 "$runs-$pipeline.log"
        continue
    fi
    python3 - "$runs/$pipeline/report/metrics.json" "$runs/$pipeline/train/manifest.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
train = json.load(open(sys.argv[2]))["stats"]
print("stage seconds:", {k: round(v, 1) for k, v in report["timings_s"].items()})
for name, t in train.items():
    print(f"{name}: {t['examples_per_second']:.0f} examples/s, {t['train_seconds']:.1f} s training, "
          f"best epoch {t['best_epoch']}, per epoch {t['train_seconds'] / max(t['epochs_run'], 1):.1f} s")
for r in report["results"]:
    if r["search"] == "exact" and r["model"] in train and r["split"] == "test":
        view = r["seen_filter"] + (f" (newest {r['recent_window']})" if r.get("recent_window") else "")
        print(f"{r['model']} seen filter {view}: HitRate@50 {r['metrics']['hit_rate@50']:.4f} "
              f"CI {r['hit_rate_ci95'][0]:.4f}-{r['hit_rate_ci95'][1]:.4f}")
PY
done
# The peer on the same GPU, when it was carried: target/peer/run_peer.py (../shared/peers/
# torch_rechub/) and target/peer/site/ holding torch-rechub 0.9.0 and what it imports beyond
# PyTorch (pandas, scikit-learn, annoy, pyarrow), installed here for the GPU machine's Python with
#   pip install --no-deps --target target/peer/site --python-version 3.X --only-binary=:all: ...
if [ -f target/peer/run_peer.py ]; then
    echo "== torch-rechub youtube_dnn on cuda"
    PYTHONPATH=target/peer/site timeout "${PEER_TIMEOUT:-240}" python3 target/peer/run_peer.py \
        --data data/ml-1m/interactions.parquet --models youtube_dnn --extra_topk 50,100 \
        --num_workers 0 --device cuda || echo "peer run failed or timed out"
fi
exit $status

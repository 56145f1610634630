#!/usr/bin/env bash
# Builds the pipeline binary with the CUDA backend (`xtask --features cuda`) on a machine with
# no GPU and no system CUDA, for a GPU machine that has an NVIDIA driver and the CUDA libraries
# as PyPI wheels (a PyTorch environment).
#
# - The toolkit's build-time parts come from PyPI into target/cuda-toolkit/ (a venv): nvcc,
#   nvvm (cicc), the runtime headers and libcudart, crt and cccl headers. Nothing else on the
#   machine changes.
# - The libraries cudarc links (libcuda, libcublas, libcublasLt, libcurand, libnvrtc) are the
#   GPU machine's: here the link uses stub libraries with their sonames, generated from the
#   function names cudarc binds, so the binary records libcuda.so.1, libcublas.so.13, ... and
#   the dynamic loader finds the real ones there (LD_LIBRARY_PATH, printed at the end).
# - The binary goes to target/cuda/release/xtask (its own target directory: the CPU build's
#   cache is untouched), stripped to target/cuda/xtask and compressed to target/cuda/xtask.gz.
# - With nothing cached it took 14 min 21 s on the 2-core machine (candle's CUDA kernels are
#   most of it: nvcc over its quantised-matmul kernels); the binary is 194 MB, 68 MB stripped,
#   18 MB compressed.
#
# Settings (environment): CUDA_VERSION (default 13.0, the lent H200 machines' driver and nvcc),
# CUDA_COMPUTE_CAP (default 90: H100/H200), CUBLAS_SONAME_MAJOR (13), CURAND_SONAME_MAJOR (10).
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_VERSION="${CUDA_VERSION:-13.0}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
CUDA_MAJOR="${CUDA_VERSION%%.*}"
CUBLAS_MAJOR="${CUBLAS_SONAME_MAJOR:-$CUDA_MAJOR}"
CURAND_MAJOR="${CURAND_SONAME_MAJOR:-10}"
venv=target/cuda-toolkit
start=$(date +%s)

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
echo "== CUDA $CUDA_VERSION build-time toolkit from PyPI into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==$CUDA_VERSION.*" "nvidia-nvvm==$CUDA_VERSION.*" \
    "nvidia-cuda-runtime==$CUDA_VERSION.*" "nvidia-cuda-crt==$CUDA_VERSION.*" \
    "nvidia-cuda-cccl==$CUDA_VERSION.*"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
toolkit="$site/nvidia/cu$CUDA_MAJOR"
[ -x "$toolkit/bin/nvcc" ] || { echo "no nvcc under $toolkit" >&2; exit 1; }
toolkit="$(cd "$toolkit" && pwd)"

# The linker looks for the unversioned names.
ln -sf "libcudart.so.$CUDA_MAJOR" "$toolkit/lib/libcudart.so"

echo "== stub libraries for the link (the GPU machine's real ones are used at run time)"
cargo fetch --quiet
cudarc=$(cargo metadata --format-version 1 --features cuda --manifest-path xtask/Cargo.toml 2>/dev/null |
    "$venv/bin/python" -c 'import json, sys, os
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "cudarc"))')
stubs="$toolkit/lib/stubs"
mkdir -p "$stubs"
stub() { # module of cudarc, library name, soname
    local module=$1 lib=$2 soname=$3
    grep -ohE '^pub unsafe fn [A-Za-z0-9_]+' "$cudarc/src/$module/sys/mod.rs" |
        awk '{print $4}' | sort -u | sed 's/.*/void &(void) {}/' > "$stubs/$lib.c"
    gcc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$lib.so" "$stubs/$lib.c"
    echo "   lib$lib.so ($soname): $(wc -l < "$stubs/$lib.c") functions"
}
stub driver cuda libcuda.so.1
stub cublas cublas "libcublas.so.$CUBLAS_MAJOR"
stub cublaslt cublasLt "libcublasLt.so.$CUBLAS_MAJOR"
stub curand curand "libcurand.so.$CURAND_MAJOR"
stub nvrtc nvrtc "libnvrtc.so.$CUDA_MAJOR"

echo "== cargo build --release -p xtask --features cuda (compute capability $CUDA_COMPUTE_CAP)"
export PATH="$toolkit/bin:$PATH" CUDA_HOME="$toolkit" CUDA_ROOT="$toolkit"
CARGO_TARGET_DIR=target/cuda cargo build --release -p xtask --features cuda

binary=target/cuda/release/xtask
# What travels to the GPU machine: stripped and compressed (the device tool carries 64 MiB).
strip -o target/cuda/xtask "$binary"
gzip -kf target/cuda/xtask
echo "== built $binary ($(du -h "$binary" | cut -f1); stripped target/cuda/xtask $(du -h target/cuda/xtask | cut -f1), \
target/cuda/xtask.gz $(du -h target/cuda/xtask.gz | cut -f1)) in $(( $(date +%s) - start )) s"
echo "   it needs at run time (readelf -d):"
readelf -d "$binary" | awk '/NEEDED/ {print "     " $5}'
cat <<NOTE
   On the GPU machine, point the loader at the CUDA wheels of its Python environment, e.g.
     export LD_LIBRARY_PATH="\$(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(":".join(os.path.join(p, d, "lib") for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, "lib"))))'):\$LD_LIBRARY_PATH"
   (libcuda.so.1 comes with the driver), then run
     target/cuda/xtask pipeline --config pipelines/ml-1m-youtubednn.toml --device cuda
   scripts/device-check.sh does this for the ML-1M pipelines.
NOTE

#!/usr/bin/env bash
# edgemem's GPU checks in one go (docs/RUNTIMES.md, "GPU checks"). Run from a checkout, on any machine
# with an NVIDIA GPU, with edgemem's dependencies plus onnxruntime-gpu, tensorrt (10 or 11), cuda-python:
#   tests/gpu/run_gpu_checks.sh [OUT_DIR]
#   GRAPH=g.onnx REF=g.ref.npz tests/gpu/run_gpu_checks.sh   # also check a reference saved on another machine
# Steps: the runtimes probe; the GPU runtime tests (torch on CUDA, ort-cuda, ort-tensorrt, tensorrt, and the
# runtime conformance suite, where unavailable runtimes skip with their reason); memvit_tiny exported fp32 and
# fp16 (and int8 on the TensorRT paths), references made by PyTorch on the CPU (`verify --save-reference`),
# checked on the GPU runtimes with `verify --reference`; a short `edgemem bench` of memvit_tiny on the GPU runtimes.
# Everything goes to OUT_DIR/gpu_checks.log (default gpu-checks-<UTC time>).
# Exit status: 0 when every step passed, 1 when one failed, 3 when there is no NVIDIA GPU.
set -u -o pipefail
cd "$(dirname "$0")/../.."
out=${1:-gpu-checks-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
log="$out/gpu_checks.log"
py=${PYTHON:-python3}
gpu_runtimes=ort-cuda,ort-tensorrt,tensorrt
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# fp32 means fp32 in cuBLAS/cuDNN (torch, ONNX Runtime CUDA): the fp32 tolerances (1e-4) assume it.
export NVIDIA_TF32_OVERRIDE=0
# CUDA from pip wheels (site-packages/nvidia/*/lib, as torch's and onnxruntime-gpu's extras install it) and no
# system CUDA: put those folders on the library path (on the H200 of 2026-12-04 ort-cuda loaded without it too).
nv_libs=$("$py" -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for sp in site.getsitepackages() for p in glob.glob(sp + '/nvidia/**/lib*.so*', recursive=True)})))" 2>/dev/null)
[ -n "$nv_libs" ] && export LD_LIBRARY_PATH="$nv_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
failed=()

run() {  # run one named step, its output into the log, and remember a failure
    local name=$1
    shift
    echo "=== $name: $*" | tee -a "$log"
    if "$@" 2>&1 | tee -a "$log"; then
        echo "=== $name: ok" | tee -a "$log"
    else
        echo "=== $name: FAILED" | tee -a "$log"
        failed+=("$name")
    fi
}

{ date -u; git rev-parse HEAD 2>/dev/null; uname -a; } >"$log"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >>"$log" 2>&1; then
    echo "no NVIDIA GPU (nvidia-smi -L failed): nothing to check" | tee -a "$log"
    exit 3
fi
run versions "$py" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); print('onnxruntime', o.__version__, o.get_available_providers())"
run runtimes "$py" -m edgemem.cli runtimes
run pytest "$py" -m pytest -q -p no:cacheprovider -rs \
    tests/runtimes/test_gpu_runtimes.py tests/runtimes/test_tensorrt_build.py tests/runtimes/test_runtimes.py tests/export/test_saved_reference.py
for precision in f32 fp16; do
    graph="$out/memvit_tiny_$precision.onnx"
    ref="$out/memvit_tiny_$precision.ref.npz"
    run "export-$precision" "$py" -m edgemem.cli export memvit_tiny --out "$graph" --precision "$precision" --no-verify
    run "reference-$precision" "$py" -m edgemem.cli verify "$graph" --runtimes ort-cpu --save-reference "$ref"
    run "verify-$precision" "$py" -m edgemem.cli verify "$graph" --reference "$ref" --runtimes "$gpu_runtimes"
done
# int8: the trained zoo model, quantized (QDQ, ORT's symmetric quantizer) on real cue-match clips, so the int8
# tolerances against PyTorch hold; built in TensorRT's explicit quantization on both TensorRT paths.
data="$out/cue-match"
graph="$out/memvit_tiny_cuematch_int8.onnx"
ref="$out/memvit_tiny_cuematch_int8.ref.npz"
run data-int8 "$py" -m edgemem.cli data synth --task cue-match --out "$data" --videos 16 --val 8 --seed 0
run export-int8 "$py" -m edgemem.cli export memvit_tiny_cuematch --out "$graph" --precision int8 --quantizer ort --calib "$data" --no-verify
run reference-int8 "$py" -m edgemem.cli verify "$graph" --runtimes ort-cpu --data "$data" --save-reference "$ref"
run verify-int8 "$py" -m edgemem.cli verify "$graph" --reference "$ref" --runtimes ort-tensorrt,tensorrt
run bench "$py" -m edgemem.cli bench --models memvit_tiny --runtimes "torch-cuda,$gpu_runtimes" --clips 5 --warmup 2 --repeats 1 --out "$out/bench"
if [ -n "${GRAPH:-}" ] && [ -n "${REF:-}" ]; then
    run verify-given "$py" -m edgemem.cli verify "$GRAPH" --reference "$REF" --runtimes "$gpu_runtimes"
fi
echo "=== failed steps: ${failed[*]:-none}" | tee -a "$log"
[ ${#failed[@]} -eq 0 ]

#!/usr/bin/env bash
# One command on a GPU host (`make gpu-bench`): an environment of its own, a repository built for the cuda target
# per precision, the real Triton (python backend, from nvidia-pytriton) serving it, and the served benchmark
# against sentence-transformers fp16 in-process on the same card. Run it from the checkout's root:
#
#   scripts/gpu.sh [extra python -m bench.gpu_served arguments]
#
# Environment variables (all optional):
#   GPU_VENV     the environment to create or reuse (default .venv-gpu)
#   PYTHON       the host python whose CUDA torch stack the environment reuses (default python3; 3.11 or 3.12)
#   WHEEL_PARTS  offline host: a folder holding the parts scripts/gpu_wheelhouse.sh made (wheels.tar.xz.NN);
#                they are unpacked to $GPU_VENV.wheels and installed from there, without an index
#   WHEELHOUSE   offline host: a folder of those wheels, already unpacked
#   PEER_WHEEL_PARTS  offline host, peers step: the parts of
#                `REQUIREMENTS=scripts/peer-infinity-requirements.txt scripts/gpu_wheelhouse.sh OUTDIR`
#   INFINITY_VENV the peer's environment to create or reuse (default .venv-infinity)
#   PRECISIONS   default fp16,bf16,int4
#   STSB         the STS-B dev csv (default ../shared/data/stsb/sts-dev.csv)
#   BENCH_OUT    where the report goes (default docs/benchmarks)
#   GPU_SUITE    comma list of what to run (default served; `all` = every record of docs/benchmarks/gpu.md):
#                served  the served benchmark (bench.gpu_served; extra arguments go to it)
#                peers   served fp16 against sentence-transformers fp16 in-process and Infinity served, same texts,
#                        batch 32, concurrency 1/4/16: MiniLM (real weights) and the bge-large shape (random)
#                int8    the GPU int8 candidates against the fp16 route, MiniLM and bge-large shape (bench.gpu)
#                large   Qwen3-Embedding-8B/4B shapes at bf16/int4/W8A8/FP8 (bench.gpu_large)
#                memory  EMB_PROVIDER_ENABLE_GPU_MEMORY_OPTIMIZATION off vs on (bench.gpu_memory)
#
# How the Triton python stub gets its environment (bench/gpu_env.py says why in full): the stub runs the first
# python3 on PATH, which the launcher (exporter.serve) sets to this environment's. The environment is a copy of the
# host's CUDA python environment when that is a venv (a venv over a venv would not see its torch), else a venv over
# the host's site-packages; numpy 1.26 and numpy-1 builds of scipy/scikit-learn are installed into it. So the stub,
# the models, the build and the benchmark run one environment whose numpy the stub accepts; the host's files are
# not changed and no .pth file is written.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTRITON=nvidia-pytriton==0.7.0
venv=${GPU_VENV:-.venv-gpu}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}

suite=${GPU_SUITE:-served}
[ "$suite" = all ] && suite=served,peers,int8,large,memory
for step in ${suite//,/ }; do  # checked before any work: a typo must not cost an environment build
  case $step in served|peers|int8|large|memory) ;;
    *) echo "error: GPU_SUITE step '$step' is not one of served, peers, int8, large, memory (or all)" >&2; exit 2 ;;
  esac
done

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "error: no NVIDIA GPU here (nvidia-smi -L failed)" >&2; exit 1; }

# unpack_parts PARTS DEST: the xz stream scripts/gpu_wheelhouse.sh split into parts, unpacked once into DEST
unpack_parts() {
  if [ ! -f "$2/.complete" ]; then
    rm -rf "$2" && mkdir -p "$2" || return 1
    (set -o pipefail; cat "$1"/wheels.tar.xz.[0-9][0-9] | xz -d -T0 | tar -x -C "$2") || return 1
    touch "$2/.complete"
  fi
}

# peer_python: the interpreter of Infinity's own environment (bench/peers.py says why it needs one), made like
# $venv over the host's CUDA torch stack and filled from scripts/peer-infinity-requirements.txt; prints its path
# (and nothing else on stdout). It runs in $(...), where set -e does not hold: every step returns on failure, so a
# failed install is never stamped as done.
peer_python() {
  local env=${INFINITY_VENV:-.venv-infinity} reqs=scripts/peer-infinity-requirements.txt want
  [ -x "$env/bin/python" ] || "$python" -m bench.gpu_env create "$env" --python "$python" >&2 || return 1
  want=$(sha1sum < "$reqs" | cut -c1-12)
  if [ "$(cat "$env/.installed" 2>/dev/null)" != "$want" ]; then
    if [ -n "${PEER_WHEEL_PARTS:-}" ]; then
      unpack_parts "$PEER_WHEEL_PARTS" "$env.wheels" >&2 || return 1
      "$env/bin/python" -m pip install -q --no-index --no-deps --no-compile "$env.wheels"/*.whl >&2 || return 1
    else
      "$env/bin/python" -m pip install -q -r "$reqs" >&2 || return 1
    fi
    echo "$want" > "$env/.installed"
  fi
  echo "$env/bin/python"
}

if [ -n "${WHEEL_PARTS:-}" ]; then
  WHEELHOUSE=$venv.wheels
  unpack_parts "$WHEEL_PARTS" "$WHEELHOUSE"
fi

[ -x "$venv/bin/python" ] || "$python" -m bench.gpu_env create "$venv" --python "$python"
stamp=$venv/.installed
want=$(cat scripts/gpu-requirements.txt scripts/gpu-requirements-host.txt | sha1sum | cut -c1-12)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # a host's CPU onnxruntime shares the onnxruntime/ package directory with onnxruntime-gpu: out of our copy first
  "$venv/bin/python" -m pip uninstall -q -y onnxruntime 2>/dev/null || true
  if [ -n "${WHEELHOUSE:-}" ]; then
    # exactly the wheels packed for this host; the rest of the stack is the host's own
    "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile "$WHEELHOUSE"/*.whl
  else
    "$venv/bin/python" -m pip install -q -r scripts/gpu-requirements-host.txt -r scripts/gpu-requirements.txt
    "$venv/bin/python" -m pip install -q --no-deps "$PYTRITON"  # its own pins (tritonclient[grpc] ...) unneeded
  fi
  echo "$want" > "$stamp"
fi

# ONNX Runtime's CUDA provider loads cuBLAS/cuDNN/cuFFT by name: use the ones that came with torch's wheels.
libs=$("$venv/bin/python" -m bench.gpu_env libs)
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
"$venv/bin/python" -c 'import numpy, onnxruntime as o; assert "CUDAExecutionProvider" in o.get_available_providers(), o.get_available_providers(); print("environment: numpy", numpy.__version__, "onnxruntime", o.__version__, o.get_available_providers())'

out=${BENCH_OUT:-docs/benchmarks}
work=${GPU_WORK:-/tmp/gpu-bench-work}  # ONNX / NF4 artefacts bench.gpu builds; bench.gpu_memory reuses them
int8_variants=torch-fp32,torch-fp16,ort-fp16-binding,torch-w8a8,torch-fp8,torch-w8a8-compiled,torch-fp8-compiled
for step in ${suite//,/ }; do
  case $step in
    served) "$venv/bin/python" -m bench.gpu_served --device cuda --precisions "${PRECISIONS:-fp16,bf16,int4}" \
              ${STSB:+--stsb "$STSB"} --out "$out" "$@" ;;
    peers) peer=$(peer_python) || { echo "error: the Infinity environment could not be made (see above)" >&2; exit 1; }
           for shape in minilm bge-large; do
             model=()  # MiniLM: the bundled model itself; bge-large: its shape with random weights
             [ "$shape" = minilm ] || model=(--model "$("$venv/bin/python" -m bench.gpu --model-dirs-only \
                                                         --shapes "$shape" --work "$work")")
             "$venv/bin/python" -m bench.gpu_served --report-name "served-peers-$shape" "${model[@]}" \
               --device cuda --precisions fp16 --batch-size 32 --concurrency 1,4,16 --infinity-python "$peer" \
               ${STSB:+--stsb "$STSB"} --out "$out"
           done ;;
    int8) "$venv/bin/python" -m bench.gpu --out "$out/gpu-int8" --work "$work" --workloads 32x128,64x256 \
            --deadline-s 3600 --worker-timeout-s 600 --variants "$int8_variants" ;;
    large) "$venv/bin/python" -m bench.gpu_large --out "$out/gpu-large" ;;
    memory) "$venv/bin/python" -m bench.gpu --out "$out/gpu-int8" --work "$work" --build-only \
              --variants ort-fp16-binding,torch-nf4
            "$venv/bin/python" -m bench.gpu_memory --out "$out/gpu-memory" --artefact "minilm-fp16=$work/minilm/fp16" \
              --artefact "bge-large-fp16=$work/bge-large/fp16" --artefact "bge-large-int4=$work/bge-large/nf4" ;;
  esac
done

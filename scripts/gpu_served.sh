#!/bin/bash
# GPU machine: unpack the bundle, overlay ORT 1.32's (pure-python) transformer optimizer on onnxruntime-gpu 1.30,
# then run the served benchmark. On the GPU machine, in the repository root, with the bundle parts copied to
# /tmp/bundle and the STS-B dev csv carried in .gpu/run (docs/benchmarks/gpu.md):
#   bash scripts/gpu_served.sh PRECISIONS [extra benchmark args]
set -eo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -d /tmp/site ] || (cat /tmp/bundle/site.tar.xz.* | xz -d -T0 | tar -x -C /tmp)
if [ ! -f /tmp/site/.ort132 ]; then
  python3 - <<'PY'
import glob, zipfile
z = zipfile.ZipFile(glob.glob("/tmp/site/extra/ort132/*.whl")[0])
for n in z.namelist():
    if n.startswith("onnxruntime/transformers/"):
        z.extract(n, "/tmp/ort132x")
PY
  rm -rf /tmp/site/onnxruntime/transformers && cp -r /tmp/ort132x/onnxruntime/transformers /tmp/site/onnxruntime/
  touch /tmp/site/.ort132
fi
if [ -d /tmp/site/numpy ]; then  # numpy 1.26 for the Triton python stub only (scipy there needs numpy 2)
  mkdir -p /tmp/np1 && mv /tmp/site/numpy /tmp/site/numpy-1.26.4*.dist-info /tmp/site/numpy.libs /tmp/np1/ 2>/dev/null || true
fi
export PYTHONPATH=/tmp/site:$PWD
# The python stub does not take PYTHONPATH from tritonserver's environment here: a .pth hook in the image's venv
# puts numpy<2 and the carried packages first on sys.path, in stub processes only, and loads torch's CUDA libs.
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])')
cat > "$SP/000-emb-stub.pth" <<'PTH'
import os, sys; exec("if os.path.realpath('/proc/self/exe').endswith('triton_python_backend_stub'):\n sys.path[0:0] = ['/tmp/np1', '/tmp/site']\n open('/tmp/stub-env.txt', 'a').write(repr((sys.flags.ignore_environment, os.environ.get('PYTHONPATH'), os.environ.get('LD_LIBRARY_PATH', '')[:200])) + '\\n')")
PTH
TORCH_LIBS=$(python3 -c 'import glob,os,torch;print(":".join(glob.glob(os.path.dirname(torch.__file__)+"/../nvidia/*/lib")))')
export LD_LIBRARY_PATH=$TORCH_LIBS:$LD_LIBRARY_PATH
nvidia-smi -L
python3 -c "import importlib.util as u, onnxruntime as o, numpy, tritonclient.http, torch; assert u.find_spec('pytriton'); print('ort', o.__version__, o.get_available_providers(), 'numpy', numpy.__version__, 'torch', torch.__version__)"
precisions=$1; shift
PYTHONPATH=/tmp/np1 python3 -c "import numpy; print('stub numpy', numpy.__version__)"
python3 -m bench.gpu_served --device cuda --model /tmp/site/extra/minilm --stsb .gpu/run/sts-dev.csv \
  --precisions "$precisions" --out "$OUT/bench" "$@" 2>&1 | tr '\r' '\n' | grep -v "window\|it/s" | tail -60
cat /tmp/stub-env.txt 2>/dev/null | head -2  # (ignore_environment, PYTHONPATH, LD_LIBRARY_PATH) as the stub saw them

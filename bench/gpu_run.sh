#!/usr/bin/env bash
# The one prepared command for the GPU machine (the device tool's `run`, issue 15's device check): the
# CUDA tests of the engine's frame paths, then `stylestream bench gpu`, with
# everything written under $OUT (gpu.md, gpu.json, gpu.log, tests.log). The machine has no network and
# runs the project from the working tree (PYTHONPATH=., no pip install).
#
#   device tool: run(command="bash bench/gpu_run.sh", timeout_s=580)
#   here, to try it: OUT=/tmp/gpu GPU_TESTS=0 bash bench/gpu_run.sh --device cpu --quick
#
# Arguments go to the bench (e.g. --steps latency,engine). BUDGET_S (default 420) is the bench's time;
# GPU_TESTS=0 leaves the tests out. Wheels in .whl/ (an ignored folder named in the tool's `carry`) are
# installed first: the GPU machine lacks aiortc/av (serve step), ifaddr (tests/conftest.py), onnxslim and
# onnxconverter-common (ONNX exports). Prepare them here, in the repository root, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl aiortc aioice av cryptography cffi pycparser google-crc32c pyee pylibsrtp pyopenssl \
#     dnspython ifaddr onnxslim onnxconverter-common      # (add --platform manylinux_2_34_x86_64 if one is missing)
#   device tool: run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=580)
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results (the device tool sets it)}"
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/stylestream-cache}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if [ "${GPU_TESTS:-1}" != 0 ] && ! python3 -c "import ifaddr" 2>/dev/null; then
    echo "tests: not run: tests/conftest.py needs ifaddr (carry its wheel in .whl)" | tee "$OUT/tests.log"
elif [ "${GPU_TESTS:-1}" != 0 ]; then
    nvidia-smi >"$OUT/tests.log" 2>&1
    timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/plugins/test_gpu.py tests/plugins/test_gpu_path.py \
        >>"$OUT/tests.log" 2>&1
    echo "tests: exit $?" | tee -a "$OUT/tests.log"
fi
python3 -m stylestream.bench.gpu_cli --budget-s "${BUDGET_S:-420}" -o "$OUT/gpu" "$@" 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"

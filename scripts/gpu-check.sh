#!/usr/bin/env bash
# Every GPU path of mfclip in one command, sized for a lent device (issue 29; docs/performance.md).
#
#   scripts/gpu-check.sh --fetch     here, with pip and an index: the carried wheels into .whl/
#   scripts/gpu-check.sh --dry-run   anywhere: the plan, and the carried files checked
#   scripts/gpu-check.sh [--out DIR] [--budget SECONDS]
#                                    on the device: install, CUDA tests, benches, one summary
#
# From the device tool: run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=540).
# It writes gpu-check.json (the summary), gpu-check.log, tests-*.xml and bench-*.json under $OUT
# (or --out DIR), and stops starting steps when its budget (default 480 s) runs out.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
START=$(date +%s)

PYTHON=${PYTHON:-python3}
WHEELS=.whl
BUDGET=480
SUMMARY_RESERVE=20 # seconds kept for the summary
OUT_DIR=${OUT:-}
MODE=run
while [ $# -gt 0 ]; do
    case $1 in
    --dry-run) MODE=dry-run ;;
    --fetch) MODE=fetch ;;
    --out) OUT_DIR=$2 && shift ;;
    --budget) BUDGET=$2 && shift ;;
    --wheels) WHEELS=$2 && shift ;;
    -h | --help) sed -n 2,11p "$0" && exit 0 ;;
    *) echo "gpu-check: unknown option $1 (see --help)" >&2 && exit 2 ;;
    esac
    shift
done
HELPER="$PYTHON scripts/gpu_check.py"

if [ "$MODE" = fetch ]; then
    mkdir -p "$WHEELS"
    # the device's Python is 3.12 on x86-64; all but wcwidth are pure Python
    $PYTHON -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any \
        -d "$WHEELS" -r scripts/gpu-wheels.txt || exit 1
    $HELPER wheels "$WHEELS" && $HELPER payload "$WHEELS"
    exit
fi

# -- the plan: name | most seconds | fewest seconds worth starting | command ----------------------
# Cheap and most telling first: correctness in process, then the DESIGN targets' config, then the
# commands end to end, then the small config's figures.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mfclip-gpu-check.XXXXXX")
OUT_DIR=${OUT_DIR:-$WORK/out}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
if [ "$MODE" = run ]; then exec > >(tee -a "$OUT_DIR/gpu-check.log") 2>&1; fi
BENCH="--images 256 --size 1024 --batch-size 256 --repeats 2"
# xunit1: the junit files keep what each test measured (record_property)
PYTEST="$PYTHON -m pytest -m cuda -q -rfEs -p no:cacheprovider -o junit_family=xunit1"
INSTALL="$PYTHON -m pip install -q --no-index --find-links $WHEELS --no-deps --no-cache-dir"
STEPS=(
    "install|120|30|$INSTALL --no-compile -r $WORK/requirements.txt && $INSTALL -e ."
    "tests-core|150|40|$PYTEST tests/test_cuda.py --junitxml=$OUT_DIR/tests-core.xml"
    "bench-vit-b-16|150|60|$PYTHON -m mfclip_cli bench --device cuda --config vit-b-16 $BENCH --json $OUT_DIR/bench-vit-b-16.json"
    "tests-cli|270|60|$PYTEST tests/test_cuda_cli.py --junitxml=$OUT_DIR/tests-cli.xml"
    "bench-tiny|120|45|$PYTHON -m mfclip_cli bench --device cuda --config tiny $BENCH --json $OUT_DIR/bench-tiny.json"
)

echo "gpu-check: plan ($MODE), budget $BUDGET s, results in $OUT_DIR"
for step in "${STEPS[@]}"; do
    IFS='|' read -r name cap floor command <<<"$step"
    printf '  %-15s at most %3s s (not started with under %s s left): %s\n' \
        "$name" "$cap" "$floor" "$command"
done
echo "checks:"
failed=0
for tool in bash timeout "$PYTHON"; do
    command -v "$tool" >/dev/null || { echo "  $tool: not found" && failed=1; }
done
$HELPER wheels "$WHEELS" || failed=1
# what the device tool carries is measured here, in the checkout (the device's copy has no .git)
if [ "$MODE" = dry-run ]; then $HELPER payload "$WHEELS" || failed=1; fi
$HELPER requirements >"$WORK/requirements.txt" || failed=1
echo "  installs with --no-deps, keeping what the image has: $(paste -sd ' ' "$WORK/requirements.txt")"

STEP_LOG=$WORK/steps.jsonl
: >"$STEP_LOG"
record() { # name status rc seconds limit
    printf '{"name": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit": %s}\n' "$@" >>"$STEP_LOG"
}

if [ "$MODE" = dry-run ]; then
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name cap _ _ <<<"$step"
        record "$name" planned null 0 "$cap"
    done
    $HELPER summary "$OUT_DIR" "$STEP_LOG" || failed=1
    echo "gpu-check: dry run $([ $failed = 0 ] && echo passed || echo FAILED)"
    rm -rf "$WORK"
    exit $failed
fi

# -- the run --------------------------------------------------------------------------------------
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MFCLIP_HOME=$WORK/home
DEADLINE=$((START + BUDGET - SUMMARY_RESERVE))
if [ $failed != 0 ]; then
    echo "gpu-check: the carried files are not right (above); nothing run"
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu,utilization.gpu \
    --format=csv 2>&1 | head -3
if ! timeout 120 $PYTHON -c 'import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)
sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: torch sees no CUDA device here; nothing run"
    exit 1
fi

previous_failed=""
for step in "${STEPS[@]}"; do
    IFS='|' read -r name cap floor command <<<"$step"
    left=$((DEADLINE - $(date +%s)))
    limit=$((cap < left ? cap : left))
    if [ -n "$previous_failed" ]; then
        echo "== $name: not started ($previous_failed failed)"
        record "$name" "skipped" null 0 "$limit"
        continue
    fi
    if [ "$limit" -lt "$floor" ]; then
        echo "== $name: not started, $left s of the budget left"
        record "$name" "skipped" null 0 "$limit"
        continue
    fi
    echo "== $name (at most $limit s): $command"
    began=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c "$command"
    rc=$?
    took=$(($(date +%s) - began))
    case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
    esac
    echo "== $name: $status (exit $rc) in $took s"
    record "$name" "$status" "$rc" "$took" "$limit"
    if [ "$name" = install ]; then
        if [ $status != ok ]; then previous_failed=install; fi
        $PYTHON -m pip list 2>/dev/null | grep -iE \
            '^(torch|torchvision|open.clip|facenet|peft|timm|transformers|numpy|opencv|typer|rich|pillow|safetensors|mfclip) '
    fi
done
$HELPER summary "$OUT_DIR" "$STEP_LOG"
echo "gpu-check: $(($(date +%s) - START)) s; files in $OUT_DIR"
grep -q '"status": "\(failed\|timeout\)"' "$STEP_LOG"
all_ok=$?
rm -rf "$WORK"
[ $all_ok != 0 ]

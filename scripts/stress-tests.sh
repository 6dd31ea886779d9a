#!/usr/bin/env bash
# Runs the timing-sensitive tests N times (default 20) while a CPU hog keeps every core busy,
# and reports each failure and how close the script checks came to their bounds.
#   scripts/stress-tests.sh [N]
# The tests: bench calibration, agent tasks, compare and monitor against the scripted mock
# (ferrite-bench), the `ferrite bench` CLI against the mock, and the server's keep-alive /
# drain / abort tests. They are built first, before the hog starts, so the build is not what
# gets measured.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
TESTS=(
  "-p ferrite-bench --test calibration --test agent --test compare"
  "-p ferrite --test bench_cli"
  "-p ferrite-server --test http"
)
for t in "${TESTS[@]}"; do
  # shellcheck disable=SC2086
  cargo test $t --no-run -q 2>/dev/null
done

hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$(nproc)"); do
  (while :; do :; done) &
  hogs+=($!)
done
echo "hog: ${#hogs[@]} busy loops on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1))"

log=$(mktemp)
out=$(mktemp)
export FERRITE_TIMING_LOG=$log
failed=0
for i in $(seq "$N"); do
  status=pass
  for t in "${TESTS[@]}"; do
    # shellcheck disable=SC2086
    if ! cargo test $t -q >"$out" 2>&1; then
      status=FAIL
      failed=$((failed + 1))
      echo "run $i: cargo test $t failed:"
      grep -E "^(---- |test .* FAILED|thread .* panicked)|got " "$out" | head -20
    fi
  done
  echo "run $i/$N: $status"
done

echo
echo "closest approach to each script bound over $N runs (share of the allowance used):"
awk -F'\t' '{ u = ($3 > 0) ? $2 / $3 : 0; if (!($1 in w) || u > w[$1]) { w[$1] = u; o[$1] = $2; a[$1] = $3 } }
  END { for (k in w) printf "  %-34s %6.1f%%  (off by %.3f, allowed %.3f)\n", k, 100 * w[k], o[k], a[k] }' "$log" | sort
rm -f "$log" "$out"
echo
if [ "$failed" -gt 0 ]; then
  echo "$failed failing test binaries in $N stressed runs"
  exit 1
fi
echo "all $N stressed runs passed"

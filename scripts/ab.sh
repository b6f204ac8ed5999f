#!/usr/bin/env bash
# A/B speed comparison of two ferrite builds or settings on this machine: runs `ferrite
# bench` with A and B alternately, ROUNDS times each, so that the shared machine's noise
# hits both alike, then prints per model, thread count and test the median and best tokens/s
# of each and the B/A ratios. A and B are commands: a binary, optionally preceded by
# environment assignments.
# Usage: scripts/ab.sh [-k ROUNDS] -a "A" -b "B" -- BENCH-ARGS...
# e.g.:  scripts/ab.sh -k 5 -a "FERRITE_REPACK=0 target/release/ferrite" \
#          -b target/release/ferrite -- models/synth-1b-Q4_0.gguf -p 0 -n 64 -t 1,2 -r 2
set -euo pipefail
k=5 a= b=
while getopts "k:a:b:" o; do
  case $o in k) k=$OPTARG ;; a) a=$OPTARG ;; b) b=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ "${1:-}" = -- ] && shift
[ -n "$a" ] && [ -n "$b" ] && [ $# -gt 0 ] || {
  echo "usage: $0 [-k ROUNDS] -a \"A\" -b \"B\" -- BENCH-ARGS..." >&2
  exit 2
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq "$k"); do
  for side in a b; do
    # Word splitting is the point: "VAR=1 path/to/ferrite".
    # shellcheck disable=SC2086
    env ${!side} bench "$@" --json > "$out/$side-$round.json"
  done
done
python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
rows = {}
for f in glob.glob(os.path.join(sys.argv[1], "*.json")):
    side = os.path.basename(f)[0]
    for e in json.load(open(f)):
        key = (os.path.basename(e["model_filename"]), e["n_threads"], e["test"])
        rows.setdefault(key, {}).setdefault(side, []).extend(e["samples_ts"])
print("| model | threads | test | A median (best) t/s | B median (best) t/s | B/A median | B/A best |")
print("|---|---|---|---|---|---|---|")
for key in sorted(rows):
    a, b = rows[key]["a"], rows[key]["b"]
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {key[0]} | {key[1]} | {key[2]} | {ma:.1f} ({max(a):.1f}) | {mb:.1f} ({max(b):.1f}) "
          f"| {mb / ma:.3f} | {max(b) / max(a):.3f} |")
PY

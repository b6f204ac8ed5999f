#!/usr/bin/env bash
# Side-by-side speed: `ferrite bench` and (when LLAMA_BENCH=/path/to/llama-bench is set)
# llama.cpp's llama-bench on the same files and thread counts, interleaved per model and
# repetition so that machine noise hits both alike; prints a ratio table (ferrite / llama.cpp
# tokens/s; > 1 means ferrite is faster) and, for several thread counts, how each one scales.
# Generation (tgN) rows also show each engine's share of the memory read bandwidth that
# ferrite's `--roofline` probe measured on the same threads just before its repetitions
# (bytes read per token × tokens/s ÷ probe): tg of a model larger than the caches cannot go
# past 100%, so the scaling table puts the probe's own thread scaling beside the engines'.
# Usage: LLAMA_BENCH=... scripts/bench.sh [-p 512] [-n 128] [-d 0] [-t 2] [-r 3] [-k ROUNDS] MODEL.gguf...
# (-d: context depth, tokens already cached when each test starts; comma-separated for several)
set -euo pipefail
cd "$(dirname "$0")/.."
p=512 n=128 d=0 t=2 r=3 k=1
while getopts "p:n:d:t:r:k:" o; do
  case $o in p) p=$OPTARG ;; n) n=$OPTARG ;; d) d=$OPTARG ;; t) t=$OPTARG ;; r) r=$OPTARG ;; k) k=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-p N] [-n N] [-d D[,D]] [-t T[,T]] [-r R] [-k ROUNDS] MODEL.gguf..." >&2; exit 2; }
cargo build -q --release -p ferrite-cli
ferrite=./target/release/ferrite
scripts/check-kernel-calls.sh "$ferrite" || echo "warning: measuring anyway" >&2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'); threads $t; ferrite ISA: ${FERRITE_ISA:-best}" >&2
for round in $(seq "$k"); do
  for m in "$@"; do
    echo "round $round: ferrite $m" >&2
    "$ferrite" bench "$m" -p "$p" -n "$n" -d "$d" -t "$t" -r "$r" --roofline --json > "$out/f-$round-$(basename "$m").json"
    if [ -n "${LLAMA_BENCH:-}" ]; then
      echo "round $round: llama.cpp $m" >&2
      "$LLAMA_BENCH" -m "$m" -p "$p" -n "$n" -d "$d" -t "$t" -r "$r" -o json > "$out/l-$round-$(basename "$m").json" 2>/dev/null
    fi
  done
done
python3 - "$out" <<'PY'
import json, os, sys, glob, statistics
d = sys.argv[1]
rows = {}
bytes_per_token = {}  # (model, threads, test) -> bytes one generated token reads (ferrite's count)
machine = {}  # (model, threads, test) -> probe read bandwidths, bytes/s
for f in sorted(glob.glob(os.path.join(d, "*.json"))):
    who = os.path.basename(f)[0]
    for e in json.load(open(f)):
        name = os.path.basename(e["model_filename"])
        test = e.get("test") or (f"pp{e['n_prompt']}" if e["n_prompt"] else f"tg{e['n_gen']}")
        if e.get("n_depth") and "@" not in test:
            test += f" @ d{e['n_depth']}"
        key = (name, e["n_threads"], test)
        rows.setdefault(key, {}).setdefault(who, []).extend(e["samples_ts"])
        if "bytes_per_token" in e:
            bytes_per_token[key] = e["bytes_per_token"]
            machine.setdefault(key, []).extend(e.get("samples_machine_read_bytes_per_s", []))
def roofline(key, who, v):
    if key not in bytes_per_token or not machine.get(key) or who not in v:
        return "-"
    return f"{100 * bytes_per_token[key] * statistics.mean(v[who]) / statistics.mean(machine[key]):.0f}%"
print(f"| model | threads | test | ferrite t/s | llama.cpp t/s | ratio | probe GB/s | ferrite roofline | llama.cpp roofline |")
print(f"| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for key, v in sorted(rows.items()):
    name, th, test = key
    fm = statistics.mean(v["f"]) if "f" in v else float("nan")
    lm = statistics.mean(v["l"]) if "l" in v else float("nan")
    fs = statistics.stdev(v["f"]) if len(v.get("f", [])) > 1 else 0.0
    ls = statistics.stdev(v["l"]) if len(v.get("l", [])) > 1 else 0.0
    ratio = fm / lm if "l" in v and lm > 0 else float("nan")
    probe = f"{statistics.mean(machine[key]) / 1e9:.1f}" if machine.get(key) else "-"
    print(f"| {name} | {th} | {test} | {fm:.2f} ± {fs:.2f} | {lm:.2f} ± {ls:.2f} | {ratio:.2f} | {probe} | {roofline(key, 'f', v)} | {roofline(key, 'l', v)} |")
# With several thread counts (-t 1,2), how each engine scales: mean tokens/s at the most
# threads over the mean at the fewest, per model and test.
counts = sorted({th for (_, th, _) in rows})
if len(counts) > 1:
    lo, hi = counts[0], counts[-1]
    print()
    print(f"| model | test | ferrite {hi}T/{lo}T | llama.cpp {hi}T/{lo}T | probe {hi}T/{lo}T |")
    print(f"| --- | --- | ---: | ---: | ---: |")
    def scaling(name, test, who):
        a, b = rows.get((name, lo, test), {}).get(who), rows.get((name, hi, test), {}).get(who)
        return statistics.mean(b) / statistics.mean(a) if a and b else float("nan")
    def probe_scaling(name, test):
        a, b = machine.get((name, lo, test)), machine.get((name, hi, test))
        return f"{statistics.mean(b) / statistics.mean(a):.2f}" if a and b else "-"
    for name, test in sorted({(name, test) for (name, _, test) in rows}):
        print(f"| {name} | {test} | {scaling(name, test, 'f'):.2f} | {scaling(name, test, 'l'):.2f} | {probe_scaling(name, test)} |")
PY

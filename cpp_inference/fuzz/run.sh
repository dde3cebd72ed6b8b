#!/usr/bin/env bash
# Fuzz the binary's input handling (src/inputs.cc: PNG header check, .npy parser,
# region ids) with AFL++ under AddressSanitizer + UndefinedBehaviorSanitizer.
#   apt-get install afl++ libclang-rt-14-dev      # Debian 12: AFL++ 4.04c, clang 14
#   cpp_inference/fuzz/run.sh [SECONDS=600] [OUT=/tmp/tfanomaly_fuzz]
# Prints AFL++'s summary; exits 1 when any crash or hang was saved.
set -euo pipefail
secs=${1:-600}
out=${2:-/tmp/tfanomaly_fuzz}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
AFL_USE_ASAN=1 AFL_USE_UBSAN=1 afl-clang-fast++ -std=c++17 -O1 -g -I "$here/../include" \
  "$here/../src/inputs.cc" "$here/fuzz_inputs.cc" -o "$out/fuzz_inputs"
python "$here/make_corpus.py" "$out/seeds"
rm -rf "$out/findings"
AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  afl-fuzz -i "$out/seeds" -o "$out/findings" -m none -V "$secs" -- "$out/fuzz_inputs" >"$out/afl.log" 2>&1 || true
stats="$out/findings/default/fuzzer_stats"
grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs|stability) ' "$stats"
crashes=$(awk '$1=="saved_crashes"{print $3}' "$stats")
hangs=$(awk '$1=="saved_hangs"{print $3}' "$stats")
[ "$crashes" = 0 ] && [ "$hangs" = 0 ]

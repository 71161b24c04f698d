#!/usr/bin/env bash
# Gate benchmark: `ccfan verify` (diff, scope, secrets; no tests stage) of attempts of growing size, and the
# start-up cost of loading and compiling the default rule pack. Prints Markdown tables for docs/benchmarks.md.
#
#   scripts/bench-verify.sh [REPS=7]
set -euo pipefail
reps=${1:-7}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CCFAN_BIN:-}" ]; then
  (cd "$here" && cargo build --release --locked --quiet)
  CCFAN_BIN="$here/target/release/ccfan"
fi
root=$(mktemp -d /tmp/ccfan-bench-verify.XXXXXX)
export HOME="$root/home" GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid \
  GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid CCFAN_WORKTREE_ROOT="$root/worktrees"
mkdir -p "$HOME" "$root/repo/src"
cd "$root/repo"
git init -q -b main
for i in $(seq 1 200); do printf 'pub fn f%s() -> u32 { %s }\n' "$i" "$i" > "src/base$i.rs"; done
git add -A && git commit -qm base

# A worker that writes FILES files of LINES lines each, ordinary code with a few keyword-bearing lines.
cat > "$root/gen.sh" <<'SH'
#!/bin/sh
set -eu
mkdir -p src/gen
awk -v files="$FILES" -v lines="$LINES" 'BEGIN {
  for (f = 1; f <= files; f++) {
    path = sprintf("src/gen/m%04d.rs", f)
    for (l = 1; l <= lines; l++) {
      if (l % 50 == 0) printf("    let token = config.get(\"api_token_%d\").unwrap_or_default();\n", l) > path
      else printf("    let value_%d = compute(%d, \"field_%d\") + offset; // line %d\n", l, l * 7, l, l) > path
    }
    close(path)
  }
}'
SH
chmod +x "$root/gen.sh"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

echo "| attempt | lines | verify median ms | ms per 1,000 lines |"
echo "|---|---:|---:|---:|"
for shape in "50 40" "50 200" "100 500" "100 1000" "200 1000"; do
  set -- $shape
  files=$1 lines=$2
  printf '[workers.gen]\nkind = "command"\ncommand = ["%s"]\nenv = { FILES = "%s", LINES = "%s" }\n[[task]]\ngoal = "generate"\nworker = "gen"\nallowed = ["src/**"]\n' \
    "$root/gen.sh" "$files" "$lines" > "$root/tasks.toml"
  run_id=$("$CCFAN_BIN" run --json --tasks "$root/tasks.toml" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  times=()
  for _ in $(seq 1 "$reps"); do
    start=$(now_ms)
    "$CCFAN_BIN" verify "$run_id" >/dev/null || true
    times+=($(( $(now_ms) - start )))
  done
  ms=$(printf '%s\n' "${times[@]}" | median)
  total=$((files * lines))
  echo "| $files files × $lines lines | $total | $ms | $(python3 -c "print(f'{$ms / ($total / 1000):.2f}')") |"
done

echo
echo "| start-up (scan of an empty file: process start + load + compile the default pack) | median ms |"
echo "|---|---:|"
: > "$root/empty.txt"
times=()
for _ in $(seq 1 21); do
  start=$(now_ms)
  "$CCFAN_BIN" scan "$root/empty.txt" >/dev/null
  times+=($(( $(now_ms) - start )))
done
echo "| \`ccfan scan empty.txt\` | $(printf '%s\n' "${times[@]}" | median) |"
rm -rf "$root"

#!/usr/bin/env bash
# Two runs in a row on a large generated repository, merge on: each run is one task changing one file, and the
# second run's base is the commit the first one landed (what users repeat all day). Each run is the whole
# `ccfan run` command (trees, worker, recording, the gate, landing), compared with one `git worktree add` of the
# same repository timed in the same script run. Prints a Markdown table for docs/benchmarks.md.
#
#   scripts/bench-tworuns.sh [FILES=100000] [REPS=3]
#   CCFAN_TREES=checkout scripts/bench-tworuns.sh     # the same with full checkouts
#
# The first run of the first repetition also prepares the base layer (one checkout, reused by every later run).
set -euo pipefail
files=${1:-100000}
reps=${2:-3}
root=${BENCH_DIR:-$(mktemp -d /tmp/ccfan-bench-tworuns.XXXXXX)}
mkdir -p "$root"
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$here/scripts/bench-lib.sh"
bench_binary
bench_git_identity
export HOME="$root/home"
mkdir -p "$HOME"

repo="$root/repo"
rm -rf "$repo" && mkdir -p "$repo"
python3 "$here/scripts/gen-repo.py" "$repo" "$files"
mkdir -p "$root/workers"
cat > "$root/workers/edit-one.sh" <<'SH'
#!/bin/sh
echo "// edited by $CCFAN_RUN_ID" >> src/mod0000/file000.rs
SH
chmod +x "$root/workers/edit-one.sh"
git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm "generated"
tasks="$root/tasks.toml"
printf '[workers.edit]\nkind = "command"\ncommand = ["%s/workers/edit-one.sh"]\n[[task]]\ngoal = "edit one file"\nworker = "edit"\n' \
  "$root" > "$tasks"

cleanup() { remove_worktrees "$repo" "$root/wt-loop" "$root/wt-ccfan"; }
one_run() {
  local start out
  start=$(now_ms)
  out=$(CCFAN_WORKTREE_ROOT="$root/wt-ccfan" "$CCFAN_BIN" -C "$repo" run --json --tasks "$tasks" 2>"$root/stderr") ||
    { cat "$root/stderr" >&2; exit 1; }
  printf '%s' "$out" | python3 -c 'import json,sys; v=json.load(sys.stdin); assert v["tasks"][0]["state"]=="merged", v' >&2
  echo $(( $(now_ms) - start ))
}

add=(); first=(); second=()
for rep in $(seq 1 "$reps"); do
  cleanup
  start=$(now_ms)
  git -C "$repo" worktree add -q -b "loop/$rep" "$root/wt-loop/1" HEAD
  add+=($(( $(now_ms) - start )))
  cleanup
  first+=($(one_run))
  second+=($(one_run))
done
cleanup

a=$(printf '%s\n' "${add[@]}" | median)
f=$(printf '%s\n' "${first[@]}" | median); s=$(printf '%s\n' "${second[@]}" | median)
fs=$(df -T "$root" | awk 'NR==2{print $2}')
echo "files=$files reps=$reps filesystem=$fs cores=$(nproc) trees=${CCFAN_TREES:-auto} git=$(git --version | cut -d' ' -f3) (all ms: worktree add ${add[*]}; first ${first[*]}; second ${second[*]})"
echo
echo "| what | median ms | vs one \`git worktree add\` |"
echo "|---|---:|---:|"
echo "| one \`git worktree add\` of the repository | $a | 1.00× |"
echo "| ccfan run, one task, one-file change, merge on | $f | $(ratio "$f" "$a") |"
echo "| the next ccfan run, based on the commit the last one landed | $s | $(ratio "$s" "$a") |"
[ -n "${BENCH_DIR:-}" ] || rm -rf "$root"

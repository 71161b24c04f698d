#!/usr/bin/env bash
# Fan-out benchmark: ccfan preparing N worktrees of a generated repository vs a sequential loop of
# `git worktree add` doing the same. Prints a Markdown table for docs/benchmarks.md.
#
#   scripts/bench-fanout.sh [FILES=10000] [WORKTREES=16] [REPS=3]
#   BENCH_DIR=/dev/shm/ccfan-bench scripts/bench-fanout.sh     # on tmpfs, to take the disk out of the figures
#
# "ccfan prepare" is read from ccfan's own state: from the run's start until the last task's worker started,
# i.e. every worktree registered, checked out and recorded as running. "ccfan run" is the whole command
# (prepare + a `true` worker + recording each attempt + state writes). Trees are made in the mode ccfan picks
# (copy-on-write as root; CCFAN_TREES=checkout to measure checkouts). The very first run also prepares the base
# layer (one checkout, reused by every later run): it is reported on its own line. "disk" is what the 16 trees
# and the layer take (`du -sbx`, mounted views not counted twice) against one checkout of the repository.
set -euo pipefail
files=${1:-10000}
worktrees=${2:-16}
reps=${3:-3}
root=${BENCH_DIR:-$(mktemp -d /tmp/ccfan-bench.XXXXXX)}
mkdir -p "$root"
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$here/scripts/bench-lib.sh"
bench_binary
command -v sqlite3 >/dev/null || { echo "needs sqlite3 (apt-get install sqlite3)" >&2; exit 2; }
bench_git_identity
export HOME="$root/home"
mkdir -p "$HOME"

repo="$root/repo"
rm -rf "$repo" && mkdir -p "$repo"
python3 "$here/scripts/gen-repo.py" "$repo" "$files"
git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm "generated"
tasks="$root/tasks.toml"
{
  printf '[workers.noop]\nkind = "command"\ncommand = ["true"]\n[defaults]\nworker = "noop"\n'
  for i in $(seq 1 "$worktrees"); do printf '[[task]]\ngoal = "noop %s"\n' "$i"; done
} > "$tasks"

cleanup() { remove_worktrees "$repo" "$root/wt-loop" "$root/wt-ccfan"; }

loop_ms=(); prep16=(); run16=(); prep_cores=(); run_cores=(); first=""; disk=""; one=0
cores=$(nproc)
for rep in $(seq 1 "$reps"); do
  cleanup
  start=$(now_ms)
  for i in $(seq 1 "$worktrees"); do git -C "$repo" worktree add -q -b "loop/$rep-$i" "$root/wt-loop/$i" HEAD; done
  loop_ms+=($(( $(now_ms) - start )))
  [ "$one" != 0 ] || one=$(du -sb "$root/wt-loop/1" | cut -f1)
  for jobs in "$worktrees" "$cores"; do
    cleanup
    start=$(now_ms)
    run_json=$(CCFAN_WORKTREE_ROOT="$root/wt-ccfan" "$CCFAN_BIN" -C "$repo" run --json --jobs "$jobs" --tasks "$tasks" 2>/dev/null)
    total=$(( $(now_ms) - start ))
    if [ -z "$first" ]; then first=$total; fi
    if [ "$jobs" = "$worktrees" ] && [ -z "$disk" ]; then
      trees=$(du -sbx "$root/wt-ccfan" | cut -f1)
      layers=$(du -sb "$repo/.git/ccfan/layers" 2>/dev/null | cut -f1 || echo 0)
      disk=$(( trees + ${layers:-0} ))
    fi
    run_id=$(printf '%s' "$run_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
    prep=$(sqlite3 "$repo/.git/ccfan/state.db" \
      "select max(t.at) - r.created_at from transitions t join runs r on r.id = t.run_id where t.run_id = '$run_id' and t.state = 'running'")
    if [ "$jobs" = "$worktrees" ]; then prep16+=("$prep"); run16+=("$total"); else prep_cores+=("$prep"); run_cores+=("$total"); fi
  done
done
cleanup

loop=$(printf '%s\n' "${loop_ms[@]}" | median)
p16=$(printf '%s\n' "${prep16[@]}" | median); r16=$(printf '%s\n' "${run16[@]}" | median)
pc=$(printf '%s\n' "${prep_cores[@]}" | median); rc=$(printf '%s\n' "${run_cores[@]}" | median)
fs=$(df -T "$root" | awk 'NR==2{print $2}')
echo "files=$files worktrees=$worktrees reps=$reps filesystem=$fs cores=$cores git=$(git --version | cut -d' ' -f3) (medians; all runs: loop ${loop_ms[*]}; prep16 ${prep16[*]}; prep$cores ${prep_cores[*]})"
echo
echo "| what | median ms | vs loop |"
echo "|---|---:|---:|"
echo "| sequential \`git worktree add\` × $worktrees | $loop | 1.00× |"
echo "| ccfan prepare, --jobs $worktrees | $p16 | $(ratio "$p16" "$loop") |"
echo "| ccfan whole run, --jobs $worktrees | $r16 | $(ratio "$r16" "$loop") |"
echo "| ccfan prepare, --jobs $cores | $pc | $(ratio "$pc" "$loop") |"
echo "| ccfan whole run, --jobs $cores | $rc | $(ratio "$rc" "$loop") |"
echo "| ccfan first run ever (prepares the base layer), --jobs $worktrees | $first | $(ratio "$first" "$loop") |"
echo
echo "disk: $worktrees ccfan trees + base layer = $disk bytes; one checkout = $one bytes ($(ratio "$disk" "$one"))"
[ -n "${BENCH_DIR:-}" ] || rm -rf "$root"

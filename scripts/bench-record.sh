#!/usr/bin/env bash
# Recording benchmark: what one attempt costs after its worker exits, on a generated repository: a copy-on-write
# tree read from its upper layer (the default where ccfan may mount overlays), a checkout whose index stat cache is
# reused (checkouts, sandboxed workers), and a full re-read of every file (what ccfan did before, and still does
# for checkouts where `core.trustctime = false`). Same binary, same repository, one run.
#
#   scripts/bench-record.sh [FILES=10000] [TASKS=8] [REPS=3]
#   BENCH_DIR=/dev/shm/ccfan-bench scripts/bench-record.sh      # tmpfs instead of disk
#
# Each task's worker appends one line to one file (a different file per task) and exits. "attempt" is read from
# ccfan's state: from the task's `running` transition to its `completed` one — sandbox start, the worker, and
# recording its attempt. Tasks run one at a time (--jobs 1) so the figures do not share cores.
set -euo pipefail
files=${1:-10000}
tasks=${2:-8}
reps=${3:-3}
root=${BENCH_DIR:-$(mktemp -d /tmp/ccfan-bench-record.XXXXXX)}
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
mkdir -p "$repo/workers"
cat > "$repo/workers/edit-one.sh" <<'SH'
#!/bin/sh
n=$(printf '%03d' "$CCFAN_TASK_INDEX")
echo "// edited by $CCFAN_TASK_ID" >> "src/mod0000/file$n.rs"
SH
chmod +x "$repo/workers/edit-one.sh"
git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm "generated"
tasks_file="$root/tasks.toml"
{
  printf '[workers.edit]\nkind = "command"\ncommand = ["%s/workers/edit-one.sh"]\n[defaults]\nworker = "edit"\n' "$repo"
  for i in $(seq 1 "$tasks"); do printf '[[task]]\ngoal = "edit %s"\n' "$i"; done
} > "$tasks_file"

cleanup() { remove_worktrees "$repo" "$root/wt"; }
# Per-attempt milliseconds (running → completed) of one run, one line per task.
attempts() {
  local mode=$1
  cleanup
  if [ "$mode" = full ]; then git -C "$repo" config core.trustctime false; else git -C "$repo" config --unset core.trustctime || true; fi
  local trees=checkout
  [ "$mode" = cow ] && trees=copy-on-write
  local run_json run_id
  run_json=$(CCFAN_TREES=$trees CCFAN_WORKTREE_ROOT="$root/wt" "$CCFAN_BIN" -C "$repo" run --json --no-merge --jobs 1 --tasks "$tasks_file" 2>/dev/null)
  run_id=$(printf '%s' "$run_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  sqlite3 "$repo/.git/ccfan/state.db" \
    "select c.at - r.at from transitions r join transitions c on c.run_id = r.run_id and c.task_id = r.task_id
     where r.run_id = '$run_id' and r.state = 'running' and c.state = 'completed'"
}

full=(); cached=(); cow=()
for rep in $(seq 1 "$reps"); do
  full+=($(attempts full))
  cached+=($(attempts cached))
  cow+=($(attempts cow))
done
git -C "$repo" config --unset core.trustctime || true
cleanup

f=$(printf '%s\n' "${full[@]}" | median); c=$(printf '%s\n' "${cached[@]}" | median)
w=$(printf '%s\n' "${cow[@]}" | median)
fs=$(df -T "$root" | awk 'NR==2{print $2}')
echo "files=$files tasks=$tasks reps=$reps filesystem=$fs cores=$(nproc) (all attempts ms: full ${full[*]}; stat cache ${cached[*]}; copy-on-write ${cow[*]})"
echo
echo "| recording | median ms per attempt | vs full re-read |"
echo "|---|---:|---:|"
echo "| full re-read of every file (\`core.trustctime = false\`) | $f | 1.00× |"
echo "| checkout, index stat cache (sandboxed worker) | $c | $(python3 -c "print(f'{$c/$f:.2f}×')") |"
echo "| copy-on-write tree, upper layer only (default as root) | $w | $(python3 -c "print(f'{$w/$f:.2f}×')") |"
[ -n "${BENCH_DIR:-}" ] || rm -rf "$root"

#!/usr/bin/env bash
# Container backend benchmark: what one attempt costs in a Podman container (the portable attempt: the task's tree
# bundled out, the container made and started through the API, the runner checking the base out, the worker,
# the change recorded and bundled back, received through its checks and checked out) against the same attempt
# under the bubblewrap backend, on a generated repository on disk. Same binary, same repository, one run.
#
#   scripts/bench-containers.sh [FILES=2000] [TASKS=8] [REPS=3]
#
# Each task's worker (`sh -c`) writes one file. "attempt" is read from ccfan's state: from the task's `running`
# transition to its `completed` one. Tasks run one at a time (--jobs 1). Needs podman, runc, mmdebstrap and
# sqlite3 (apt-get install -y podman runc mmdebstrap sqlite3), as root.
set -euo pipefail
files=${1:-2000}
tasks=${2:-8}
reps=${3:-3}
root=${BENCH_DIR:-$(mktemp -d /var/tmp/ccfan-bench-containers.XXXXXX)}
mkdir -p "$root"
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/bench-lib.sh
. "$here/scripts/bench-lib.sh"
bench_binary
for tool in podman mmdebstrap sqlite3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y podman runc mmdebstrap sqlite3)" >&2; exit 2; }
done
bench_git_identity
export HOME="$root/home"
mkdir -p "$HOME"
if command -v runc >/dev/null && [ -z "${CONTAINERS_CONF:-}" ]; then
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
    > "$root/containers.conf"
  export CONTAINERS_CONF="$root/containers.conf"
fi
image=localhost/ccfan-worker:bench
"$here/scripts/worker-image.sh" "$image" "$CCFAN_BIN" >/dev/null
socket="$root/podman.sock"
podman system service --time=0 "unix://$socket" &
service=$!
trap 'kill $service 2>/dev/null || true' EXIT
while [ ! -S "$socket" ]; do sleep 0.05; done

repo="$root/repo"
rm -rf "$repo" && mkdir -p "$repo"
python3 "$here/scripts/gen-repo.py" "$repo" "$files"
git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm "generated"
tasks_file="$root/tasks.toml"
{
  printf '[workers.edit]\nkind = "command"\ncommand = ["sh", "-c", "echo edited > edited-$CCFAN_TASK_ID.txt"]\n'
  printf '[defaults]\nworker = "edit"\n'
  for i in $(seq 1 "$tasks"); do printf '[[task]]\ngoal = "edit %s"\n' "$i"; done
} > "$tasks_file"
policy() {
  if [ "$1" = podman ]; then
    printf '[sandbox]\nbackend = "podman"\n[sandbox.container]\nimage = "%s"\nsocket = "unix://%s"\n' "$image" "$socket"
  else
    printf '[sandbox]\nbackend = "bubblewrap"\n'
  fi > "$root/policy-$1.toml"
}
policy podman; policy bubblewrap

# Per-attempt milliseconds (running → completed) of one run, one line per task.
attempts() {
  local backend=$1
  remove_worktrees "$repo" "$root/wt"
  local run_json run_id
  run_json=$(CCFAN_WORKTREE_ROOT="$root/wt" "$CCFAN_BIN" -C "$repo" run --json --no-merge --jobs 1 \
    --policy "$root/policy-$backend.toml" --tasks "$tasks_file" 2>/dev/null)
  run_id=$(printf '%s' "$run_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
  sqlite3 "$repo/.git/ccfan/state.db" \
    "select c.at - r.at from transitions r join transitions c on c.run_id = r.run_id and c.task_id = r.task_id
     where r.run_id = '$run_id' and r.state = 'running' and c.state = 'completed'"
}

bwrap=(); pod=()
for rep in $(seq 1 "$reps"); do
  bwrap+=($(attempts bubblewrap))
  pod+=($(attempts podman))
done
remove_worktrees "$repo" "$root/wt"
podman rmi -f "$image" >/dev/null 2>&1 || true

b=$(printf '%s\n' "${bwrap[@]}" | median); p=$(printf '%s\n' "${pod[@]}" | median)
bundle=$(du -k "$(ls -d "$repo"/.git/ccfan/runs/*/*/attempt-1/remote/in | tail -1)/base.bundle" 2>/dev/null | cut -f1 || echo "?")
fs=$(df -T "$root" | awk 'NR==2{print $2}')
echo "files=$files tasks=$tasks reps=$reps filesystem=$fs cores=$(nproc) base bundle=${bundle} KiB (all attempts ms: bubblewrap ${bwrap[*]}; podman ${pod[*]})"
echo
echo "| backend | median ms per attempt (worker start to recorded) | overhead vs bubblewrap |"
echo "|---|---:|---:|"
echo "| bubblewrap (local tree) | $b | +0 ms |"
echo "| podman (portable attempt: bundle out, container, bundle back, checks) | $p | +$((p - b)) ms |"
[ -n "${BENCH_DIR:-}" ] || rm -rf "$root"

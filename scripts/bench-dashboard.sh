#!/usr/bin/env bash
# Dashboard benchmark: a run of N tasks (500 by default) watched in headless Chromium. Reports the first page
# load (navigation start to all N rows drawn, median of LOADS loads) and how fresh the page is: for every state
# change it showed, the time from when ccfan stored it to when the page drew it (p50, p90, max). The run goes on
# while the page watches (16 jobs; each worker waits for a go file, then 0-1 s of work), so changes arrive the way
# they do in real use: several per second, from another process.
#
#   scripts/bench-dashboard.sh [TASKS=500] [LOADS=10]
#
# Needs chromium (apt) and puppeteer-core in .tools/npm (scripts/test.sh installs it). Runs on disk, under
# target/, which the sandbox does not hide (it hides /tmp).
set -euo pipefail
tasks_n=${1:-500}
loads=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
root=${BENCH_DIR:-$here/target/bench-dashboard}
# shellcheck source=scripts/bench-lib.sh
. "$here/scripts/bench-lib.sh"
bench_binary
bench_git_identity
modules="$here/.tools/npm/node_modules"
[ -d "$modules/puppeteer-core" ] || { echo "needs puppeteer-core: run scripts/test.sh once" >&2; exit 2; }
command -v chromium >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 2; }
[ ! -d "$root/repo" ] || remove_worktrees "$root/repo" "$root/trees"
rm -rf "$root" && mkdir -p "$root/home"
export HOME="$root/home"
repo="$root/repo"
mkdir -p "$repo/out" && echo "# bench" > "$repo/README.md" && touch "$repo/out/.keep"
git -C "$repo" init -q -b main && git -C "$repo" add -A && git -C "$repo" commit -qm init
go="$root/go"
cat > "$root/worker.sh" <<SH
#!/bin/sh
while [ ! -e "$go" ]; do sleep 0.1; done
sleep 0.\$(od -An -N1 -tu1 /dev/urandom | tr -d ' ' | cut -c1)
echo "\$CCFAN_TASK_ID" > "out/\$CCFAN_TASK_ID.txt"
SH
chmod +x "$root/worker.sh"
{
  printf '[workers.w]\nkind = "command"\ncommand = ["%s"]\n' "$root/worker.sh"
  printf '[defaults]\nworker = "w"\nallowed = ["out/**"]\n'
  for i in $(seq 1 "$tasks_n"); do printf '[[task]]\nid = "t%04d"\ngoal = "write out/t%04d.txt"\n' "$i" "$i"; done
} > "$root/tasks.toml"
CCFAN_SANDBOX_WRITABLE="$root" CCFAN_WORKTREE_ROOT="$root/trees" \
  "$CCFAN_BIN" -C "$repo" run --no-merge --jobs 16 --json --tasks "$root/tasks.toml" > "$root/run.json" 2> "$root/run.log" &
run_pid=$!
"$CCFAN_BIN" -C "$repo" dashboard 2> "$root/dashboard.log" &
dash_pid=$!
trap 'kill $dash_pid $run_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "token=" "$root/dashboard.log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$root/dashboard.log" | head -1)
# The page is measured once every task is registered.
until [ "$("$CCFAN_BIN" -C "$repo" status --json 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin)["runs"]; print(sum(c for _, c in r[0]["tasks"]) if r else 0)')" = "$tasks_n" ]; do sleep 0.2; done
result=$(NODE_PATH="$modules" node "$here/scripts/bench-dashboard.js" "$url" "$tasks_n" "$go" "$loads")
wait $run_pid || true
python3 - "$result" "$tasks_n" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); n = sys.argv[2]
print(f"| measure ({n} tasks) | p50 | p90 | max | samples |")
print("|---|---|---|---|---|")
l = r["load_ms"]; c = r["change_ms"]
print(f"| first page load, navigation to {n} rows drawn | {l['p50']} ms | | {l['max']} ms | {l['n']} loads |")
print(f"| state change stored → drawn in the page | {c['p50']} ms | {c['p90']} ms | {c['max']} ms | {c['n']} changes |")
PY

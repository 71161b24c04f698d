#!/usr/bin/env bash
# Real-project benchmark: an npm package with devDependencies from the registry (mocha), TASKS tasks each editing
# one source file, `[setup] npm ci` and `[tests] npm test` on, merge on. ccfan's whole run against the loop a person
# runs by hand per task: `git worktree add`, `npm ci`, the edit, `npm test`. Both use the same warm npm cache.
#
#   scripts/bench-real.sh [TASKS=8] [REPS=3]
#   BENCH_DIR=/tmp/ccfan-bench-real scripts/bench-real.sh      # the folder to work in (default: a new temp dir)
#
# "ccfan, cold layer" is a run whose setup must run (a lockfile no layer was prepared for); "ccfan, warm layer"
# is the next run, which reuses the layer (the common case: the base moved, the lockfile did not). Every ccfan run
# also gates each attempt (npm test on the merge preview) and each landing (npm test again on the merged tree).
set -euo pipefail
tasks=${1:-8}
reps=${2:-3}
root=${BENCH_DIR:-$(mktemp -d /tmp/ccfan-bench-real.XXXXXX)}
mkdir -p "$root"
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CCFAN_BIN:-}" ]; then
  (cd "$here" && cargo build --release --locked --quiet)
  CCFAN_BIN="$here/target/release/ccfan"
fi
command -v npm >/dev/null || { echo "needs node and npm" >&2; exit 2; }
export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid \
  GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
export npm_config_cache="$root/npm-cache" npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

repo="$root/repo"
rm -rf "$repo" && mkdir -p "$repo/src" "$repo/test"
cd "$repo"
cat > package.json <<'JSON'
{ "name": "bench-real", "version": "1.0.0", "private": true,
  "scripts": { "test": "mocha --reporter dot" },
  "devDependencies": { "mocha": "11.7.1" } }
JSON
for i in $(seq 0 $((tasks - 1))); do
  printf 'module.exports = function f%s(x) { return x + %s; };\n' "$i" "$i" > "src/f$i.js"
  printf 'const assert = require("assert");\nconst f = require("../src/f%s.js");\nit("f%s adds", () => assert.strictEqual(f(1), 1 + %s));\n' "$i" "$i" "$i" > "test/f$i.test.js"
done
printf 'node_modules/\n' > .gitignore
npm install --silent >/dev/null 2>&1 # writes package-lock.json and warms the npm cache
rm -rf node_modules
# The edit each task makes: a comment line in its own source file (the tests still pass).
mkdir -p workers
cat > workers/edit.sh <<'SH'
#!/bin/sh
echo "// reviewed by task $CCFAN_TASK_ID" >> "src/f$CCFAN_TASK_INDEX.js"
SH
chmod +x workers/edit.sh
cat > ccfan.toml <<TOML
[setup]
command = ["npm", "ci", "--no-audit", "--no-fund"]
inputs = ["package-lock.json"]
writable = ["$root/npm-cache"]
[tests]
command = ["npm", "test"]
[sandbox]
env_allow = ["PATH", "HOME", "LANG", "npm_config_cache", "npm_config_audit", "npm_config_fund", "npm_config_update_notifier"]
TOML
git init -q -b main && git add -A && git commit -qm "bench project"
tasks_file="$root/tasks.toml"
{
  printf '[workers.edit]\nkind = "command"\ncommand = ["%s/workers/edit.sh"]\n[defaults]\nworker = "edit"\nallowed = ["src/**"]\n' "$repo"
  for i in $(seq 1 "$tasks"); do printf '[[task]]\ngoal = "review f%s"\n' "$((i - 1))"; done
} > "$tasks_file"

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
reset_repo() {
  # Copy-on-write task trees are overlay mounts (their .git link in their upper layer): unmounted first.
  findmnt -rn -o TARGET | awk -v d="$root/" 'index($0, d) == 1' | sort -r | while read -r m; do umount "$m"; done
  git -C "$repo" worktree list --porcelain | awk '/^worktree /{print $2}' | tail -n +2 | while read -r w; do
    git -C "$repo" worktree unlock "$w" 2>/dev/null || true
    git -C "$repo" worktree remove --force --force "$w" 2>/dev/null || true; done
  git -C "$repo" worktree prune
  git -C "$repo" for-each-ref --format='%(refname)' refs/heads/loop refs/heads/ccfan refs/ccfan | while read -r r; do
    git -C "$repo" update-ref -d "$r"; done
  git -C "$repo" reset -q --hard "$start_commit"
  rm -rf "$root/wt-loop" "$root/wt-ccfan"
  sync
}
start_commit=$(git -C "$repo" rev-parse HEAD)

loop_ms=(); cold_ms=(); warm_ms=()
for rep in $(seq 1 "$reps"); do
  reset_repo
  start=$(now_ms)
  for i in $(seq 0 $((tasks - 1))); do
    wt="$root/wt-loop/$i"
    git -C "$repo" worktree add -q -b "loop/$rep-$i" "$wt" HEAD
    (cd "$wt" && npm ci --silent >/dev/null 2>&1 && echo "// reviewed by hand" >> "src/f$i.js" && npm test --silent >/dev/null 2>&1)
  done
  loop_ms+=($(( $(now_ms) - start )))
  for kind in cold warm; do
    reset_repo
    [ "$kind" = cold ] && rm -rf "$repo/.git/ccfan/layers"
    start=$(now_ms)
    CCFAN_WORKTREE_ROOT="$root/wt-ccfan" "$CCFAN_BIN" -C "$repo" run --json --tasks "$tasks_file" > "$root/run.json" 2>"$root/run.err" ||
      { echo "ccfan run failed:" >&2; cat "$root/run.err" >&2; exit 1; }
    elapsed=$(( $(now_ms) - start ))
    merged=$(python3 -c 'import json,sys; print(sum(t["state"] == "merged" for t in json.load(open(sys.argv[1]))["tasks"]))' "$root/run.json")
    [ "$merged" = "$tasks" ] || { echo "only $merged of $tasks tasks merged" >&2; exit 1; }
    if [ "$kind" = cold ]; then cold_ms+=("$elapsed"); else warm_ms+=("$elapsed"); fi
  done
done
reset_repo

loop=$(printf '%s\n' "${loop_ms[@]}" | median)
cold=$(printf '%s\n' "${cold_ms[@]}" | median); warm=$(printf '%s\n' "${warm_ms[@]}" | median)
ratio() { python3 -c "print(f'{$1/$2:.2f}×')"; }
fs=$(df -T "$root" | awk 'NR==2{print $2}')
echo "tasks=$tasks reps=$reps filesystem=$fs cores=$(nproc) node=$(node --version) mocha=11.7.1 (all runs ms: loop ${loop_ms[*]}; cold ${cold_ms[*]}; warm ${warm_ms[*]})"
echo
echo "| what | median ms | vs loop |"
echo "|---|---:|---:|"
echo "| by hand, per task: worktree add, npm ci, edit, npm test | $loop | 1.00× |"
echo "| ccfan run, setup runs (cold layer), every attempt and landing gated | $cold | $(ratio "$cold" "$loop") |"
echo "| ccfan run, layer reused (warm), every attempt and landing gated | $warm | $(ratio "$warm" "$loop") |"
[ -n "${BENCH_DIR:-}" ] || rm -rf "$root"

#!/usr/bin/env bash
# Hooks benchmark: `ccfan verify --staged` (and the installed pre-commit hook script as git runs it) on a typical
# commit — 15 files edited, 5 added — in a 10,000-file repository, with a ccfan.toml whose [hooks] runs diff, scope
# and secrets, and with no policy (secrets only). Prints a Markdown table for docs/benchmarks.md.
#
#   scripts/bench-hooks.sh [RUNS=40]
set -euo pipefail
runs=${1:-40}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${CCFAN_BIN:-}" ]; then
  (cd "$here" && cargo build --release --locked --quiet)
  CCFAN_BIN="$here/target/release/ccfan"
fi
root=$(mktemp -d /tmp/ccfan-bench-hooks.XXXXXX)
trap 'rm -rf "$root"' EXIT
export HOME="$root/home" GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid \
  GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
mkdir -p "$HOME" "$root/repo"
cd "$root/repo"
git init -q -b main

# 100 folders × 100 files of ordinary code, 30 lines each, a few lines with keywords the secret rules look for.
awk 'BEGIN {
  for (d = 1; d <= 100; d++) {
    dir = sprintf("src/mod%03d", d)
    system("mkdir -p " dir)
    for (f = 1; f <= 100; f++) {
      path = sprintf("%s/file%03d.rs", dir, f)
      for (l = 1; l <= 30; l++) {
        if (l % 15 == 0) printf("    let token = config.get(\"api_token_%d\").unwrap_or_default();\n", l) > path
        else printf("    let value_%d = compute(%d, \"field_%d_%d\") + offset; // line %d\n", l, l * 7, d, f, l) > path
      }
      close(path)
    }
  }
}'
printf '[hooks]\nstages = ["diff", "scope", "secrets"]\ndenied = ["deploy/**", "**/*.pem"]\n' > ccfan.toml
git add -A && git commit -qm base
files=$(git ls-files | wc -l)

# A typical commit: 15 files edited (5 lines appended each), 5 new files of 40 lines.
for i in $(seq 1 15); do
  path=$(printf 'src/mod%03d/file%03d.rs' "$((i * 6))" "$((i * 3))")
  for l in 1 2 3 4 5; do printf '    let added_%s = compute(%s, "new field") + offset;\n' "$l" "$l" >> "$path"; done
done
mkdir -p src/feature
for i in 1 2 3 4 5; do
  awk -v n="$i" 'BEGIN { for (l = 1; l <= 40; l++) printf("    let feature_%d_%d = build(%d); // new\n", n, l, l) }' \
    > "src/feature/part$i.rs"
done
git add -A
staged=$(git diff --cached --name-only | wc -l)
"$CCFAN_BIN" hooks install >/dev/null

time_runs() { # label, command…
  local label=$1; shift
  "$@" >/dev/null 2>&1 || { echo "$label failed" >&2; "$@"; exit 1; }
  python3 - "$runs" "$label" "$@" <<'PY'
import subprocess, sys, time
runs, label, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
times = []
for _ in range(runs):
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times.append((time.perf_counter() - start) * 1000)
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"| {label} | {pick(0.5):.1f} | {pick(0.9):.1f} | {times[0]:.1f} |")
PY
}

echo "repository: $files files; staged: $staged files (15 edited, 5 added); $runs runs each"
echo
echo "| what | median ms | p90 ms | min ms |"
echo "|---|---:|---:|---:|"
time_runs '`ccfan verify --staged` (diff, scope, secrets)' "$CCFAN_BIN" verify --staged
time_runs 'the installed pre-commit hook (sh + ccfan)' .git/hooks/pre-commit
git rm -q --cached ccfan.toml && mv ccfan.toml ../ccfan.toml.off
time_runs '`ccfan verify --staged`, no ccfan.toml (secrets only)' "$CCFAN_BIN" verify --staged
time_runs '`ccfan --version` (process start-up floor)' "$CCFAN_BIN" --version

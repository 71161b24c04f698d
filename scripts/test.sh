#!/usr/bin/env bash
# The test suite, exactly as CI runs it: installs what the tests drive into .tools/ (git-ignored), then runs every
# test. Safe to run again: what is installed is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in git sh setsid python3 npm; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: missing ${missing[*]} (Debian: apt-get install -y git util-linux python3 python3-pip npm)" >&2
  exit 2
fi
tools="$PWD/.tools"
mkdir -p "$tools"

# The official SARIF 2.1.0 schema (shipped in Microsoft's SARIF multitool package) and a JSON-schema validator,
# so the SARIF tests validate ccfan's output against the real schema.
if [ ! -s "$tools/sarif-2.1.0.json" ]; then
  scratch=$(mktemp -d)
  (cd "$scratch" && npm pack --silent @microsoft/sarif-multitool-linux@5.7.0 >/dev/null 2>&1)
  tar -xzf "$scratch"/microsoft-sarif-multitool-linux-5.7.0.tgz -C "$scratch" package/sarif-2.1.0.json
  mv "$scratch/package/sarif-2.1.0.json" "$tools/sarif-2.1.0.json"
  rm -rf "$scratch"
fi
if ! PYTHONPATH="$tools/py" python3 -c 'import jsonschema' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools/py" 'jsonschema==4.26.0'
fi
# The real agent CLIs the agent-worker tests drive against the fake model server (pinned; no API key needed).
codex_version=0.169.0 claude_version=2.1.330
if [ "$("$tools/npm/node_modules/.bin/codex" --version 2>/dev/null)" != "codex-cli $codex_version" ] ||
   ! "$tools/npm/node_modules/.bin/claude" --version 2>/dev/null | grep -q "^$claude_version "; then
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" \
    "@openai/codex@$codex_version" "@anthropic-ai/claude-code@$claude_version" >/dev/null 2>&1 ||
  npm install --no-audit --no-fund --prefix "$tools/npm" \
    "@openai/codex@$codex_version" "@anthropic-ai/claude-code@$claude_version"
fi
export CCFAN_SARIF_SCHEMA="$tools/sarif-2.1.0.json" CCFAN_TEST_PYTHONPATH="$tools/py"
export CCFAN_AGENT_BIN="$tools/npm/node_modules/.bin"

cargo test --locked --all-targets "$@"

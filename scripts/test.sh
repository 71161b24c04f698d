#!/usr/bin/env bash
# The test suite, exactly as CI runs it: installs what the tests drive into .tools/ (git-ignored), then runs every
# test. Safe to run again: what is installed is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in git sh setsid python3 npm chromium podman mmdebstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: missing ${missing[*]} (Debian: apt-get install -y git util-linux python3 python3-pip npm chromium podman runc mmdebstrap)" >&2
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
# The MCP Inspector (its CLI mode) for the MCP conformance test; 0.15.0 runs on Node 20.
# puppeteer-core drives the system's Chromium in the dashboard test (24.x runs on Node 20; it downloads no browser).
codex_version=0.169.0 claude_version=2.1.330 inspector_version=0.15.0 puppeteer_version=24.40.0
if [ "$("$tools/npm/node_modules/.bin/codex" --version 2>/dev/null)" != "codex-cli $codex_version" ] ||
   ! "$tools/npm/node_modules/.bin/claude" --version 2>/dev/null | grep -q "^$claude_version " ||
   ! grep -q "\"version\": \"$inspector_version\"" \
     "$tools/npm/node_modules/@modelcontextprotocol/inspector/package.json" 2>/dev/null ||
   ! grep -q "\"version\": \"$puppeteer_version\"" "$tools/npm/node_modules/puppeteer-core/package.json" 2>/dev/null; then
  packages=("@openai/codex@$codex_version" "@anthropic-ai/claude-code@$claude_version"
            "@modelcontextprotocol/inspector@$inspector_version" "puppeteer-core@$puppeteer_version")
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" "${packages[@]}" >/dev/null 2>&1 ||
  npm install --no-audit --no-fund --prefix "$tools/npm" "${packages[@]}"
fi
# The official Python MCP SDK, for the stdio and Streamable HTTP conformance tests and the status benchmark.
if ! PYTHONPATH="$tools/mcp-py" python3 -c 'import mcp.client.stdio' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools/mcp-py" 'mcp==2.3.0' 'jsonschema==4.26.0'
fi
# The pre-commit framework, for the test that runs ccfan's .pre-commit-hooks.yaml through `pre-commit try-repo`.
if ! PYTHONPATH="$tools/pre-commit-py" python3 -c 'import pre_commit' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools/pre-commit-py" 'pre-commit==4.7.0'
fi
# Podman with runc: crun cannot set its rlimits on some machines (CI's kind among them), runc with these can.
if command -v runc >/dev/null && [ -z "${CONTAINERS_CONF:-}" ]; then
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
    > "$tools/containers.conf"
  export CONTAINERS_CONF="$tools/containers.conf"
fi
export CCFAN_PRE_COMMIT_PYTHONPATH="$tools/pre-commit-py"
export CCFAN_SARIF_SCHEMA="$tools/sarif-2.1.0.json" CCFAN_TEST_PYTHONPATH="$tools/py"
export CCFAN_AGENT_BIN="$tools/npm/node_modules/.bin" CCFAN_MCP_PYTHONPATH="$tools/mcp-py"
# Everything above is installed, so no test may skip for want of a tool (plain `cargo test` skips them, saying so).
export CCFAN_REQUIRE_TOOLS=1

cargo test --locked --all-targets "$@"
# The integration suite again with task trees as full checkouts: the first pass ran them as copy-on-write views
# (as root, as in CI), and both modes must pass everything, the sandbox escape battery included.
CCFAN_TREES=checkout cargo test --locked --test it "$@"

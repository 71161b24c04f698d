#!/usr/bin/env bash
# The test suite, exactly as CI runs it: checks the tools the tests drive, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in git sh setsid; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: missing ${missing[*]} (Debian: apt-get install -y git util-linux)" >&2
  exit 2
fi
cargo test --locked --all-targets "$@"

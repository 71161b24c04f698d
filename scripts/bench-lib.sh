# Shared by the benchmark scripts (sourced): the binary under test, a hermetic git identity, timing, medians and
# removing what a run left in the benchmark repository. Expects `here` (the project root) to be set.

# Sets CCFAN_BIN: the given binary, else a fresh release build.
bench_binary() {
  if [ -z "${CCFAN_BIN:-}" ]; then
    (cd "$here" && cargo build --release --locked --quiet)
    CCFAN_BIN="$here/target/release/ccfan"
  fi
}

# A git that reads no system config and commits as "bench".
bench_git_identity() {
  export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid \
    GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
ratio() { python3 -c "print(f'{$1/$2:.2f}×')"; }

# Removes every worktree but the main one, the loop and ccfan branches and salvage refs of REPO, then the
# folders given after it, and flushes the disk so the next timed run starts clean. Copy-on-write task trees are
# overlay mounts (their .git link lives in their upper layer): they are unmounted first.
remove_worktrees() {
  local repo=$1; shift
  local dir
  for dir in "$@"; do
    findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r | while read -r m; do umount "$m"; done
  done
  git -C "$repo" worktree list --porcelain | awk '/^worktree /{print $2}' | tail -n +2 | while read -r w; do
    git -C "$repo" worktree unlock "$w" 2>/dev/null || true
    git -C "$repo" worktree remove --force --force "$w" 2>/dev/null || true; done
  rm -rf "$@"
  git -C "$repo" worktree prune
  git -C "$repo" for-each-ref --format='%(refname)' refs/heads/loop refs/heads/ccfan refs/ccfan | while read -r r; do
    git -C "$repo" update-ref -d "$r"; done
  rm -rf "$@"
  sync
}

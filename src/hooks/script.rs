//! The hook scripts ccfan writes: small POSIX `sh` that runs a chained user hook first (with the same arguments
//! and standard input), then `ccfan hooks run <hook>`, and fails closed — a missing or crashing ccfan stops the
//! commit with a message instead of letting it through unchecked.

use std::path::Path;

use super::HookName;

/// The first line after the shebang of every script ccfan writes; how ccfan knows a hook is its own.
pub const MARKER: &str = "# ccfan-hook v1";

/// The folder (inside the hooks folder) where a user's hook that ccfan chained waits, under its own name
/// (restored by `ccfan hooks uninstall`).
pub const CHAINED_DIR: &str = "ccfan-chained";

/// Quotes `text` for `sh` (single quotes; a quote inside becomes `'\''`).
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The ccfan binary a script of ours calls, read back from its `ccfan=` line.
pub fn baked_binary(script: &str) -> Option<String> {
    let line = script.lines().find(|line| line.starts_with("ccfan='"))?;
    let quoted = line.strip_prefix("ccfan=")?;
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace(r"'\''", "'"))
}

/// The script for `hook`, calling the ccfan at `binary` (or, when that is gone, the one on `PATH`).
pub fn script(hook: HookName, binary: &Path) -> String {
    let name = hook.as_str();
    let bypass = hook.bypass();
    let what = hook.action();
    let binary_text = binary.to_string_lossy();
    // pre-push gets the pushed refs on standard input: read it once, hand it to both.
    let (read_input, feed) = if hook.reads_stdin() {
        (
            "input=$(cat)\n",
            "if [ -n \"$input\" ]; then printf '%s\\n' \"$input\"; fi | ",
        )
    } else {
        ("", "")
    };
    format!(
        r#"#!/bin/sh
{MARKER} ({name}): the ccfan gate before this {what}. Written by `ccfan hooks install`;
# `ccfan hooks uninstall` removes it and puts back any hook that was here. Bypass once, on purpose: {bypass}
hook={name}
ccfan={quoted}
chained="$(dirname "$0")/{CHAINED_DIR}/$hook"
{read_input}if [ -f "$chained" ] && [ -x "$chained" ]; then
  case "$(sed -n 2p "$chained" 2>/dev/null)" in
    "{MARKER}"*) ;; # never ccfan's own script again
    *) {feed}"$chained" "$@" || exit $? ;;
  esac
fi
if [ ! -x "$ccfan" ]; then
  ccfan=$(command -v ccfan 2>/dev/null) || ccfan=
fi
if [ -z "$ccfan" ]; then
  echo "ccfan: the $hook hook cannot find ccfan ({shown} is gone and none is on PATH): nothing was checked, so the {what} is stopped." >&2
  echo "ccfan: reinstall ccfan, or remove the hook with 'ccfan hooks uninstall'; bypass once with '{bypass}'." >&2
  exit 1
fi
{feed}"$ccfan" hooks run "$hook" "$@"
status=$?
if [ "$status" -gt 1 ]; then
  echo "ccfan: the $hook gate could not run (ccfan exited with status $status), so the {what} is stopped; bypass once with '{bypass}'." >&2
  exit 1
fi
exit "$status"
"#,
        quoted = sh_quote(&binary_text),
        shown = binary_text.replace(['"', '$', '`', '\\'], "?"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_path_round_trips_through_quoting() {
        for path in ["/usr/bin/ccfan", "/home/o'neil/bin/ccfan", "/a b/$x/ccfan"] {
            let text = script(HookName::PrePush, Path::new(path));
            assert_eq!(baked_binary(&text).as_deref(), Some(path));
            assert!(text.starts_with("#!/bin/sh\n# ccfan-hook v1 (pre-push)"));
            assert!(text.contains("input=$(cat)"));
        }
        let commit = script(HookName::PreCommit, Path::new("/bin/ccfan"));
        assert!(!commit.contains("input=$(cat)"));
        assert!(commit.contains("git commit --no-verify"));
    }
}

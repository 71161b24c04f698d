//! The scanning engine over one buffer: an Aho-Corasick pass finds keyword hits; each hit's rules confirm with
//! their regex inside a window around it (the hit's lines, capped), then entropy, allowlists and the inline
//! `ccfan:allow-secret` marker decide. Keyword gating is what makes it fast and keeps false positives down.

use std::collections::HashSet;

use super::redact::{fingerprint, redact};
use super::rules::{RulePack, Severity};

/// How far a window reaches beyond a keyword hit, at most.
const REACH: usize = 512;

/// Markers that allow a secret on their line (a deliberate test fixture).
const INLINE_MARKERS: [&[u8]; 2] = [b"ccfan:allow-secret", b"gitleaks:allow"];

/// One secret found. Holds no raw secret: only its redacted form and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct SecretHit {
    /// Rule id.
    pub rule: String,
    /// Rule description.
    pub description: String,
    /// 1-based line within the buffer (0: the secret is in the file's name).
    pub line: usize,
    /// 1-based byte column of the secret.
    pub column: usize,
    /// The secret, redacted.
    pub redacted: String,
    /// Stable fingerprint of the secret.
    pub fingerprint: String,
    /// Severity.
    pub severity: Severity,
    /// Byte range of the secret in the scanned buffer (never serialised: lets a caller scrub the buffer).
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
}

/// Shannon entropy (bits per byte) of `bytes`.
pub fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for &byte in bytes {
        counts[usize::from(byte)] += 1;
    }
    let total = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / total;
            -p * p.log2()
        })
        .sum()
}

fn line_start(text: &[u8], at: usize) -> usize {
    memchr::memrchr(b'\n', &text[..at]).map_or(0, |newline| newline + 1)
}

fn line_end(text: &[u8], at: usize) -> usize {
    memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |newline| at + newline)
}

impl RulePack {
    /// Scans `text` (from file `path`) and returns the secrets found, in order of position. Inline allow markers
    /// are honoured (for people scanning their own files).
    pub fn scan(&self, path: &str, text: &[u8]) -> Vec<SecretHit> {
        self.scan_with(path, text, true)
    }

    /// Replaces every secret found in `text` by its redacted form (for any text a worker controls that ccfan
    /// shows or stores: messages, notes, output tails, symlink targets).
    pub fn redact_text(&self, text: &str) -> String {
        let hits = self.scan_with("", text.as_bytes(), false);
        if hits.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for hit in hits.iter().filter(|hit| !hit.span.is_empty()) {
            // A span that cuts a character (a capped key block can) widens to whole characters: never skipped.
            let (mut start, mut end) = (hit.span.start, hit.span.end.min(text.len()));
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            if start < at {
                continue;
            }
            out.push_str(&text[at..start]);
            out.push_str(&hit.redacted);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Like [`RulePack::scan`]; `honour_markers: false` ignores inline allow markers — the gate's choice, since the
    /// worker wrote the lines it judges.
    pub fn scan_with(&self, path: &str, text: &[u8], honour_markers: bool) -> Vec<SecretHit> {
        if self.global.allows_path(path) {
            return Vec::new();
        }
        // (rule, window start, window end)
        let mut windows: Vec<(usize, usize, usize)> = Vec::new();
        for hit in self.keywords.find_overlapping_iter(text) {
            for &rule in &self.keyword_rules[hit.pattern().as_usize()] {
                let start = line_start(text, hit.start()).max(hit.start().saturating_sub(REACH));
                let end = line_end(text, hit.end()).min(hit.end() + REACH);
                windows.push((rule, start, end));
            }
        }
        for &rule in &self.ungated {
            windows.push((rule, 0, text.len()));
        }
        windows.sort_unstable();
        let mut found: Vec<(usize, usize, usize)> = Vec::new(); // (secret start, secret end, rule)
        let mut seen = HashSet::new();
        let mut index = 0;
        while index < windows.len() {
            let (rule_index, start, mut end) = windows[index];
            index += 1;
            while index < windows.len() && windows[index].0 == rule_index && windows[index].1 <= end
            {
                end = end.max(windows[index].2);
                index += 1;
            }
            let rule = &self.rules[rule_index];
            if rule
                .path
                .as_ref()
                .is_some_and(|regex| !regex.is_match(path.as_bytes()))
                || rule.allow.allows_path(path)
            {
                continue;
            }
            let Some(regex) = rule.regex.as_ref().and_then(super::rules::LazyRegex::get) else {
                continue;
            };
            for captures in regex.captures_iter(&text[start..end]) {
                let Some(secret) = captures.get(rule.secret_group).or_else(|| captures.get(0))
                else {
                    continue;
                };
                let (secret_start, secret_end) = (start + secret.start(), start + secret.end());
                let value = &text[secret_start..secret_end];
                if value.is_empty() || !seen.insert((rule_index, secret_start)) {
                    continue;
                }
                if rule.entropy.is_some_and(|minimum| entropy(value) < minimum) {
                    continue;
                }
                if rule.allow.allows_secret(value) || self.global.allows_secret(value) {
                    continue;
                }
                let line = &text[line_start(text, secret_start)..line_end(text, secret_start)];
                if honour_markers
                    && INLINE_MARKERS
                        .iter()
                        .any(|marker| memchr::memmem::find(line, marker).is_some())
                {
                    continue;
                }
                found.push((secret_start, secret_end, rule_index));
            }
        }
        // Path-only rules (gitleaks `path` without `regex`) flag the file itself.
        let mut hits: Vec<SecretHit> = self
            .rules
            .iter()
            .filter(|rule| {
                rule.regex.is_none()
                    && rule
                        .path
                        .as_ref()
                        .is_some_and(|r| r.is_match(path.as_bytes()))
            })
            .map(|rule| SecretHit {
                rule: rule.id.clone(),
                description: rule.description.clone(),
                line: 1,
                column: 1,
                redacted: "[file]".to_string(),
                fingerprint: fingerprint(path.as_bytes()),
                severity: rule.severity,
                span: 0..0,
            })
            .collect();
        found.sort_unstable();
        // One secret matched by several rules is one finding: keep the most specific (highest severity, first rule).
        let mut kept: Vec<(usize, usize, usize)> = Vec::new();
        for candidate in found {
            match kept.last_mut() {
                Some(last) if candidate.0 < last.1 && last.0 < candidate.1 => {
                    let (old, new) = (&self.rules[last.2], &self.rules[candidate.2]);
                    if new.severity > old.severity
                        || (new.severity == old.severity
                            && candidate.1 - candidate.0 > last.1 - last.0)
                    {
                        *last = candidate;
                    }
                }
                Some(_) | None => kept.push(candidate),
            }
        }
        let (mut line, mut counted, mut covered) = (1usize, 0usize, 0usize);
        for (start, end, rule_index) in kept {
            if start < covered {
                continue; // inside a key block already found
            }
            line += memchr::memchr_iter(b'\n', &text[counted..start]).count();
            counted = start;
            let rule = &self.rules[rule_index];
            let value = &text[start..end];
            // A key block is one secret: its span runs through the END line, so every copy is redacted whole.
            let end = if is_block_header(value) {
                block_end(text, end)
            } else {
                end
            };
            covered = end;
            hits.push(SecretHit {
                rule: rule.id.clone(),
                description: rule.description.clone(),
                line,
                column: start - line_start(text, start) + 1,
                redacted: redact(&String::from_utf8_lossy(value)),
                fingerprint: fingerprint(value),
                severity: rule.severity,
                span: start..end,
            });
        }
        hits
    }
}

/// At most this many lines after a key header are taken as its body when no END line comes.
const BLOCK_LINES: usize = 200;
/// At most this many bytes (an 8192-bit RSA key in PEM is about 6.4 KB).
const BLOCK_BYTES: usize = 16 << 10;

/// Whether a match opens a multi-line key block (PEM/OpenSSH/PGP `-----BEGIN`, SSH2 `---- BEGIN`, PuTTY).
fn is_block_header(value: &[u8]) -> bool {
    value.starts_with(b"PuTTY-User-Key-File-")
        || (value.starts_with(b"----") && memchr::memmem::find(value, b"BEGIN").is_some())
}

fn is_base64(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=')
}

/// Where a key block that starts before `from` ends: through its END line, or through the body lines (base64,
/// or `Name: value` headers) that follow, at most [`BLOCK_LINES`] lines and [`BLOCK_BYTES`] bytes. Lines are split
/// at newlines and at the two-character escape `\n` (keys inside JSON or string literals); a line may carry a
/// diff marker, indentation or quotes.
pub(crate) fn block_end(text: &[u8], from: usize) -> usize {
    let limit = text.len().min(from.saturating_add(BLOCK_BYTES));
    let (mut end, mut at) = (from, from);
    for _ in 0..BLOCK_LINES {
        if at >= limit {
            break;
        }
        let rest = &text[at..limit];
        let newline = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let escaped = memchr::memmem::find(rest, b"\\n").unwrap_or(rest.len());
        let (segment_len, separator) = if escaped < newline {
            (escaped, 2)
        } else {
            (newline, 1)
        };
        let segment = &rest[..segment_len];
        let segment = segment.strip_suffix(b"\\r").unwrap_or(segment);
        let segment = segment.strip_suffix(b"\r").unwrap_or(segment);
        let skip = segment
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'+' | b'"' | b'\''))
            .count();
        let body = &segment[skip..];
        if let Some(marker) = memchr::memmem::find(segment, b"END ")
            .filter(|&at| segment[..at].ends_with(b"-") || segment[..at].ends_with(b"- "))
        {
            let dashes = segment[marker..]
                .iter()
                .rposition(|&b| b == b'-')
                .map_or(segment.len(), |last| marker + last + 1);
            return at + dashes;
        }
        let run = body.iter().take_while(|&&b| is_base64(b)).count();
        let header = body.iter().position(|&b| b == b':').is_some_and(|colon| {
            colon > 0
                && body[..colon]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if run == body.len() || header {
            if !body.is_empty() {
                end = at + segment.len();
            }
        } else {
            if run >= 16 {
                end = at + skip + run;
            }
            break;
        }
        at += segment_len + separator;
    }
    end.min(limit)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const PACK: &str = r#"
version = 1
[allowlist]
stopwords = ["example"]
[[rule]]
id = "demo-token"
description = "Demo token"
keywords = ["dtk_"]
regex = '''\bdtk_[a-z0-9]{20}\b'''
samples = ["dtk_{lower:20}"]
[[rule]]
id = "generic"
description = "Generic secret"
keywords = ["secret"]
regex = '''(?i)secret\w*\s*[:=]\s*"([^"]{8,})"'''
secret_group = 1
entropy = 3.0
severity = "medium"
samples = ['secret = "{alnum:20}"']
"#;

    fn pack() -> RulePack {
        RulePack::parse(Path::new("test.toml"), PACK).unwrap()
    }

    fn builtin() -> RulePack {
        RulePack::builtin("default").unwrap()
    }

    const BODY: [&str; 3] = [
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
        "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo",
    ];

    #[test]
    fn a_private_key_is_one_secret_from_begin_to_end_in_files_json_and_diffs() {
        let pem = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
            BODY.join("\n")
        );
        let file = format!("before\n{pem}after\n");
        let json = format!("{{\"key\": {}}}\n", serde_json::to_string(&file).unwrap());
        let diff = format!(
            "+before\n{}+after\n",
            pem.lines().map(|l| format!("+{l}\n")).collect::<String>()
        );
        let pack = builtin();
        for text in [&file, &json, &diff] {
            let hits = pack.scan_with("k.pem", text.as_bytes(), false);
            assert_eq!(hits.len(), 1, "{hits:?} in {text}");
            let redacted = pack.redact_text(text);
            for body in BODY {
                assert!(!redacted.contains(&body[..20]), "{redacted}");
            }
            assert!(redacted.contains("after"), "{redacted}");
            assert!(!redacted.contains("END RSA"), "{redacted}");
        }
    }

    #[test]
    fn a_key_block_cut_inside_a_character_is_still_redacted() {
        // Body lines of base64 then a header-like line of multi-byte text past the cap.
        let text = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\nNote: {}\n",
            format!("{}\n", BODY[0]).repeat(50),
            "é".repeat(20_000)
        );
        let end = block_end(text.as_bytes(), 28);
        assert!(
            !text.is_char_boundary(end),
            "the cap cuts a character here: {end}"
        );
        let redacted = builtin().redact_text(&text);
        let head: String = redacted.chars().take(100).collect();
        assert!(!redacted.contains(&BODY[0][..20]), "{head}");
    }

    #[test]
    fn a_key_without_end_is_cut_after_its_body_lines() {
        let text = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\nfn main() {{}}\n",
            BODY.join("\n")
        );
        let redacted = builtin().redact_text(&text);
        assert!(!redacted.contains(&BODY[2][..20]), "{redacted}");
        assert!(redacted.ends_with("\nfn main() {}\n"), "{redacted}");
        // Bounded: a body that never ends stops after BLOCK_LINES lines.
        let endless = format!(
            "-----BEGIN PRIVATE KEY-----\n{}",
            format!("{}\n", BODY[0]).repeat(BLOCK_LINES * 2)
        );
        let end = block_end(endless.as_bytes(), 28);
        assert!(end < endless.len() && end <= 28 + BLOCK_BYTES, "{end}");
    }

    #[test]
    fn finds_and_redacts_with_line_and_column() {
        let text = b"fn main() {}\nlet t = \"dtk_abcdefghij0123456789\";\n";
        let hits = pack().scan("src/main.rs", text);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(
            (hits[0].rule.as_str(), hits[0].line, hits[0].column),
            ("demo-token", 2, 10)
        );
        assert_eq!(hits[0].redacted, "dtk_…[REDACTED]…89");
    }

    #[test]
    fn entropy_stopwords_and_inline_markers_allow() {
        let pack = pack();
        assert!(
            pack.scan("a", b"secret = \"aaaaaaaaaaaa\"").is_empty(),
            "low entropy"
        );
        assert!(
            pack.scan("a", b"secret = \"example-Xy7Qz9Lm\"").is_empty(),
            "stopword"
        );
        assert!(
            pack.scan("a", b"secret = \"Xy7Qz9Lm2Pq4\" // ccfan:allow-secret")
                .is_empty(),
            "marker"
        );
        let hits = pack.scan("a", b"MY_SECRET: \"Xy7Qz9Lm2Pq4\"");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].redacted, "Xy…[REDACTED]");
    }

    #[test]
    fn keyword_far_from_the_value_does_not_confirm() {
        let mut text = b"dtk_ mentioned here\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 2000));
        text.extend(b"\nno keyword on this line abcdefghij0123456789\n");
        assert!(pack().scan("a", &text).is_empty());
    }

    #[test]
    fn redact_text_hides_every_secret_and_ignores_markers() {
        let text = "link -> dtk_abcdefghij0123456789 // ccfan:allow-secret, then ünïcode";
        let clean = pack().redact_text(text);
        assert!(!clean.contains("abcdefghij0123456789"), "{clean}");
        assert!(
            clean.starts_with("link -> dtk_…[REDACTED]…89 ") && clean.ends_with("ünïcode"),
            "{clean}"
        );
    }

    #[test]
    fn entropy_of_uniform_and_constant() {
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
        assert_eq!(entropy(b"aaaa"), 0.0);
    }
}

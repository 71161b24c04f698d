//! Redaction of a stream, line by line, as the runner echoes a worker's output out of its container: each line
//! alone would miss a private key's body (only its first line names it) and a secret printed again later on its
//! own, so the redactor remembers both.

use super::RulePack;
use super::redact::redact;

/// The most secret values remembered (the oldest go first).
const MAX_SEEN: usize = 256;
/// The shortest value remembered (shorter ones would hide ordinary words).
const MIN_SEEN: usize = 8;
/// What a line inside a private key block is shown as.
pub const KEY_LINE: &str = "[REDACTED: private key material]";

/// Redacts lines in the order they come, remembering what earlier ones held.
pub struct LineRedactor {
    rules: RulePack,
    seen: Vec<String>,
    in_key_block: bool,
}

impl LineRedactor {
    /// A redactor with `rules` and nothing seen yet.
    pub fn new(rules: RulePack) -> LineRedactor {
        LineRedactor {
            rules,
            seen: Vec::new(),
            in_key_block: false,
        }
    }

    /// `line` with every secret in it redacted: the rules' finds, the values earlier lines held, and the whole
    /// line while a private key block is open.
    pub fn line(&mut self, line: &str) -> String {
        if self.in_key_block {
            if line.contains("-----END") {
                self.in_key_block = false;
            }
            return KEY_LINE.to_string();
        }
        if let Some(begin) = line.find("-----BEGIN")
            && line[begin..].contains("PRIVATE KEY")
            && !line[begin..].contains("-----END")
        {
            self.in_key_block = true;
            return format!("{}{KEY_LINE}", self.clean(&line[..begin]));
        }
        self.clean(line)
    }

    /// The rules' redaction, then the values seen before.
    fn clean(&mut self, text: &str) -> String {
        let hits = self.rules.scan_with("", text.as_bytes(), false);
        for hit in &hits {
            if let Some(value) = text.get(hit.span.clone())
                && value.len() >= MIN_SEEN
                && !self.seen.iter().any(|seen| seen == value)
            {
                if self.seen.len() == MAX_SEEN {
                    self.seen.remove(0);
                }
                self.seen.push(value.to_string());
            }
        }
        let mut out = if hits.is_empty() {
            text.to_string()
        } else {
            self.rules.redact_text(text)
        };
        for value in &self.seen {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &redact(value));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found only next to an AWS secret keyword.
    const KEY: &str = "PtYgjmUhBel31iEl2hpChYgCfrL1spNxnyVmihA+";

    #[test]
    fn a_secret_is_redacted_where_found_and_again_when_it_comes_back_alone() {
        let rules = RulePack::builtin("default").unwrap();
        let alone = format!("echo {KEY}");
        assert_eq!(rules.redact_text(&alone), alone, "the rules alone miss it");
        let mut lines = LineRedactor::new(rules);
        let first = lines.line(&format!("AWS_SECRET_ACCESS_KEY={KEY}"));
        assert!(!first.contains(KEY), "{first}");
        let echoed = lines.line(&alone);
        assert!(!echoed.contains(KEY), "{echoed}");
        assert_eq!(lines.line("nothing here"), "nothing here");
    }

    #[test]
    fn a_private_key_printed_over_lines_is_hidden_to_its_end() {
        let mut lines = LineRedactor::new(RulePack::builtin("default").unwrap());
        let body = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB";
        let shown: Vec<String> = [
            "key: -----BEGIN RSA PRIVATE KEY-----",
            body,
            body,
            "-----END RSA PRIVATE KEY-----",
            "after",
        ]
        .iter()
        .map(|line| lines.line(line))
        .collect();
        assert_eq!(shown[0], format!("key: {KEY_LINE}"));
        assert!(shown.iter().all(|line| !line.contains(body)), "{shown:?}");
        assert_eq!(shown[4], "after");
    }
}

//! Sample templates: each rule of a ccfan pack carries templates such as `AKIA{A-Z2-7:16}` that expand into fresh
//! fake secrets, so the rule pack tests itself and benchmarks can plant secrets without any real-looking secret
//! ever being written into this repository.

/// A small deterministic generator (xorshift64*), enough for fake secrets.
#[derive(Debug, Clone)]
pub struct FakeRng(u64);

impl FakeRng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> FakeRng {
        FakeRng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn charset(spec: &str) -> Option<Vec<char>> {
    let named = match spec {
        "hex" => Some("0-9a-f"),
        "HEX" => Some("0-9A-F"),
        "digits" => Some("0-9"),
        "lower" => Some("a-z"),
        "upper" => Some("A-Z"),
        "alpha" => Some("A-Za-z"),
        "alnum" => Some("A-Za-z0-9"),
        "b64" => Some("A-Za-z0-9+/"),
        "b64url" => Some("A-Za-z0-9_-"),
        _ => None,
    };
    let body: Vec<char> = named.unwrap_or(spec).chars().collect();
    let mut set = Vec::new();
    let mut index = 0;
    while index < body.len() {
        if index + 2 < body.len() && body[index + 1] == '-' {
            let (from, to) = (body[index], body[index + 2]);
            if from > to {
                return None;
            }
            set.extend(from..=to);
            index += 3;
        } else {
            set.push(body[index]);
            index += 1;
        }
    }
    (!set.is_empty()).then_some(set)
}

/// One `{CHARSET:N}` placeholder at the start of `text`: its characters, its count and its length in `text`.
fn placeholder(text: &str) -> Option<(Vec<char>, usize, usize)> {
    let close = text.find('}')?;
    let inner = &text[1..close];
    if inner.is_empty() || inner.contains(['{', '"', '\'', ' ']) {
        return None;
    }
    let (spec, count) = inner.rsplit_once(':')?;
    let count: usize = count.parse().ok()?;
    Some((charset(spec)?, count, close + 1))
}

/// Expands a template: each `{CHARSET:N}` becomes N random characters of CHARSET; any other text (a literal `{`
/// included) is kept. `None` if the template has no placeholder at all.
pub fn expand(template: &str, rng: &mut FakeRng) -> Option<String> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    let mut expanded = false;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match placeholder(&rest[open..]) {
            Some((set, count, length)) => {
                for _ in 0..count {
                    let pick = usize::try_from(rng.next_u64() % set.len() as u64).unwrap_or(0);
                    out.push(set[pick]);
                }
                expanded = true;
                rest = &rest[open + length..];
            }
            None => {
                out.push('{');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    expanded.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::RulePack;

    #[test]
    fn templates_expand() {
        let mut rng = FakeRng::new(1);
        let value = expand("AKIA{A-Z2-7:16}", &mut rng).unwrap();
        assert_eq!(value.len(), 20);
        assert!(
            value[4..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
        assert_eq!(
            expand("x{hex:4}-{b64url:3}", &mut rng).unwrap().len(),
            1 + 4 + 1 + 3
        );
        assert!(expand("no placeholder {at all}", &mut rng).is_none());
        assert!(expand("bad{z-a:3}", &mut rng).is_none());
        let json = expand(r#"h = {"Key": "{hex:4}"}"#, &mut rng).unwrap();
        assert!(
            json.starts_with(r#"h = {"Key": ""#)
                && json.ends_with(r#""}"#)
                && json.len() == r#"h = {"Key": ""}"#.len() + 4,
            "{json}"
        );
    }

    #[test]
    fn every_default_rule_finds_its_own_samples() {
        let pack = RulePack::builtin("default").unwrap();
        assert!(
            pack.rules.len() >= 100,
            "the default pack has {} rules",
            pack.rules.len()
        );
        let mut rng = FakeRng::new(42);
        let mut failures = Vec::new();
        for rule in &pack.rules {
            assert!(!rule.samples.is_empty(), "rule {} has no sample", rule.id);
            for template in &rule.samples {
                for _ in 0..5 {
                    let Some(sample) = expand(template, &mut rng) else {
                        failures.push(format!("{}: malformed template {template}", rule.id));
                        break;
                    };
                    let text = format!("// some code\n{sample}\n// more code\n");
                    let hits = pack.scan("src/config.rs", text.as_bytes());
                    if hits.is_empty() {
                        failures.push(format!("{}: no hit for {template}", rule.id));
                    }
                    for hit in &hits {
                        assert!(
                            !text.lines().nth(1).is_some_and(
                                |l| hit.redacted.len() > 4 && l.contains(&hit.redacted)
                            )
                        );
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} sample(s) not found:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

//! Rule packs: ccfan's own TOML format (`scanners/*.toml`, `[[rule]]`) and gitleaks' format (`[[rules]]`), loaded,
//! validated and compiled once — keywords into one case-insensitive Aho-Corasick automaton, each rule's regex on
//! its own (one giant alternation loses matches).

use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::bytes::Regex;
use serde::Deserialize;

use crate::input::InputError;

/// Packs compiled into the binary: `(name, TOML)`.
pub const BUILTIN_PACKS: [(&str, &str); 1] =
    [("default", include_str!("../../scanners/default.toml"))];

/// How bad a finding is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look; does not block.
    Low,
    /// Likely a secret.
    Medium,
    /// A credential format with a vendor prefix.
    High,
}

/// Values that are never findings.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// Regexes tried on the secret.
    pub regexes: Vec<Regex>,
    /// Regexes tried on the file path.
    pub paths: Vec<Regex>,
    /// Lowercase words; a secret containing one is not a finding.
    pub stopwords: Vec<String>,
}

impl Allowlist {
    /// Whether the secret is allowed.
    pub fn allows_secret(&self, secret: &[u8]) -> bool {
        if self.regexes.iter().any(|regex| regex.is_match(secret)) {
            return true;
        }
        if self.stopwords.is_empty() {
            return false;
        }
        let lower = secret.to_ascii_lowercase();
        self.stopwords
            .iter()
            .any(|word| memchr::memmem::find(&lower, word.as_bytes()).is_some())
    }

    /// Whether the path is allowed.
    pub fn allows_path(&self, path: &str) -> bool {
        self.paths
            .iter()
            .any(|regex| regex.is_match(path.as_bytes()))
    }
}

/// A rule's confirming regex, checked when the pack loads and compiled on first use: a small diff touches few
/// rules, so start-up stays cheap however large the pack.
#[derive(Debug)]
pub struct LazyRegex {
    pattern: String,
    compiled: std::sync::OnceLock<Option<Regex>>,
}

impl Clone for LazyRegex {
    fn clone(&self) -> Self {
        LazyRegex {
            pattern: self.pattern.clone(),
            compiled: std::sync::OnceLock::new(),
        }
    }
}

impl LazyRegex {
    /// The compiled regex (`None` only if a pattern that parsed fails to compile, e.g. past the size limit).
    pub fn get(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| {
                regex::bytes::RegexBuilder::new(&self.pattern)
                    .size_limit(64 << 20)
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Number of capture groups, counting the whole match.
    fn captures_len(&self) -> usize {
        regex_syntax::Parser::new()
            .parse(&self.pattern)
            .map(|hir| hir.properties().explicit_captures_len() + 1)
            .unwrap_or(1)
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Rule id.
    pub id: String,
    /// What it finds.
    pub description: String,
    /// The confirming regex (`None` for a path-only rule).
    pub regex: Option<LazyRegex>,
    /// The capture group holding the secret (0: the whole match).
    pub secret_group: usize,
    /// Minimum Shannon entropy of the secret.
    pub entropy: Option<f64>,
    /// Severity.
    pub severity: Severity,
    /// Lowercase keywords gating the regex (empty: the regex runs over everything).
    pub keywords: Vec<String>,
    /// Only files whose path matches (gitleaks `path`).
    pub path: Option<Regex>,
    /// The rule's own allowlist.
    pub allow: Allowlist,
    /// Sample templates (ccfan packs) for self-tests and benchmarks.
    pub samples: Vec<String>,
}

/// A compiled rule pack.
#[derive(Debug, Clone)]
pub struct RulePack {
    /// Where it came from (`default`, or a file path).
    pub name: String,
    /// The rules.
    pub rules: Vec<Rule>,
    /// Applies to every rule.
    pub global: Allowlist,
    pub(crate) keywords: AhoCorasick,
    /// Rules gated by each keyword pattern (by pattern id).
    pub(crate) keyword_rules: Vec<Vec<usize>>,
    /// Rules with no keyword: their regex runs over the whole text.
    pub(crate) ungated: Vec<usize>,
    /// The text it was parsed from: the same pack can be made again elsewhere (a runner in a container).
    pub(crate) source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CcfanPack {
    version: u32,
    allowlist: Option<CcfanAllowlist>,
    #[serde(rename = "rule")]
    rules: Vec<toml::Spanned<CcfanRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CcfanAllowlist {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CcfanRule {
    id: String,
    description: String,
    keywords: Vec<String>,
    regex: String,
    secret_group: Option<usize>,
    entropy: Option<f64>,
    severity: Option<Severity>,
    #[serde(default)]
    samples: Vec<String>,
    #[serde(default)]
    allow_regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksConfig {
    #[serde(default)]
    rules: Vec<toml::Spanned<GitleaksRule>>,
    allowlist: Option<GitleaksAllowlist>,
    #[serde(default)]
    allowlists: Vec<GitleaksAllowlist>,
    extend: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksRule {
    id: String,
    description: Option<String>,
    regex: Option<String>,
    secret_group: Option<usize>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    path: Option<String>,
    allowlist: Option<GitleaksAllowlist>,
    #[serde(default)]
    allowlists: Vec<GitleaksAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksAllowlist {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

/// The error for a rule regex that does not compile.
fn regex_error(
    file: &Path,
    source: &str,
    key: &str,
    span: Option<usize>,
    error: &dyn std::fmt::Display,
) -> InputError {
    let first = error
        .to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    InputError::new(file, format!("the regex does not compile: {first}"))
        .key(key)
        .at_offset(source, span)
        .fix("use RE2/Rust regex syntax: no look-around, no back-references")
}

fn compile(
    file: &Path,
    source: &str,
    key: &str,
    span: Option<usize>,
    pattern: &str,
) -> Result<Regex, InputError> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(64 << 20)
        .build()
        .map_err(|error| regex_error(file, source, key, span, &error))
}

/// Checks a rule's regex syntax now (cheap) and leaves compiling it for its first use.
fn lazy(
    file: &Path,
    source: &str,
    key: &str,
    span: Option<usize>,
    pattern: &str,
) -> Result<LazyRegex, InputError> {
    let mut parser = regex_syntax::ParserBuilder::new().utf8(false).build();
    parser
        .parse(pattern)
        .map_err(|error| regex_error(file, source, key, span, &error))?;
    Ok(LazyRegex {
        pattern: pattern.to_string(),
        compiled: std::sync::OnceLock::new(),
    })
}

fn compile_all(
    file: &Path,
    source: &str,
    key: &str,
    span: Option<usize>,
    patterns: &[String],
) -> Result<Vec<Regex>, InputError> {
    patterns
        .iter()
        .map(|p| compile(file, source, key, span, p))
        .collect()
}

impl RulePack {
    /// The text the pack was parsed from ([`RulePack::parse`] makes the same pack of it).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Loads a built-in pack by name.
    pub fn builtin(name: &str) -> Result<RulePack, InputError> {
        let Some((_, source)) = BUILTIN_PACKS.iter().find(|(pack, _)| *pack == name) else {
            let known: Vec<&str> = BUILTIN_PACKS.iter().map(|(pack, _)| *pack).collect();
            return Err(InputError::new(
                Path::new("<rules>"),
                format!("no built-in rule pack named `{name}`"),
            )
            .fix(format!(
                "use one of: {}, or a path to a rules file",
                known.join(", ")
            )));
        };
        RulePack::parse(Path::new(&format!("<built-in rules {name}>")), source)
    }

    /// Loads a rules file (ccfan's format or gitleaks').
    pub fn from_file(path: &Path) -> Result<RulePack, InputError> {
        let source = crate::input::read_text(path, "rules file")?;
        RulePack::parse(path, &source)
    }

    /// Parses rules text; `[[rules]]` means gitleaks' format, `[[rule]]` ccfan's.
    pub fn parse(path: &Path, source: &str) -> Result<RulePack, InputError> {
        let value: toml::Table =
            toml::from_str(source).map_err(|error| InputError::from_toml(path, source, &error))?;
        if value.contains_key("rules") || value.contains_key("extend") {
            return RulePack::parse_gitleaks(path, source);
        }
        let pack: CcfanPack =
            toml::from_str(source).map_err(|error| InputError::from_toml(path, source, &error))?;
        if pack.version != 1 {
            return Err(InputError::new(
                path,
                format!("rule pack version {} is not supported", pack.version),
            )
            .key("version")
            .fix("write version = 1"));
        }
        let global = match pack.allowlist {
            Some(list) => Allowlist {
                regexes: compile_all(path, source, "allowlist.regexes", None, &list.regexes)?,
                paths: compile_all(path, source, "allowlist.paths", None, &list.paths)?,
                stopwords: list
                    .stopwords
                    .iter()
                    .map(|w| w.to_ascii_lowercase())
                    .collect(),
            },
            None => Allowlist::default(),
        };
        let mut rules = Vec::with_capacity(pack.rules.len());
        for spanned in &pack.rules {
            let span = Some(spanned.span().start);
            let rule = spanned.get_ref();
            let key = format!("rule `{}`", rule.id);
            if rule.keywords.is_empty() {
                return Err(InputError::new(path, "a rule needs at least one keyword")
                    .key(format!("{key}.keywords"))
                    .at_offset(source, span)
                    .fix("add the literal prefix or context word that every match contains"));
            }
            let regex = lazy(path, source, &format!("{key}.regex"), span, &rule.regex)?;
            let secret_group = checked_group(path, source, &key, span, &regex, rule.secret_group)?;
            rules.push(Rule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                regex: Some(regex),
                secret_group,
                entropy: rule.entropy,
                severity: rule.severity.unwrap_or(Severity::High),
                keywords: rule
                    .keywords
                    .iter()
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
                path: None,
                allow: Allowlist {
                    regexes: compile_all(
                        path,
                        source,
                        &format!("{key}.allow_regexes"),
                        span,
                        &rule.allow_regexes,
                    )?,
                    paths: Vec::new(),
                    stopwords: rule
                        .stopwords
                        .iter()
                        .map(|w| w.to_ascii_lowercase())
                        .collect(),
                },
                samples: rule.samples.clone(),
            });
        }
        RulePack::assemble(path, source, rules, global)
    }

    fn parse_gitleaks(path: &Path, source: &str) -> Result<RulePack, InputError> {
        let config: GitleaksConfig =
            toml::from_str(source).map_err(|error| InputError::from_toml(path, source, &error))?;
        if config.extend.is_some() {
            return Err(
                InputError::new(path, "gitleaks `[extend]` is not supported")
                    .key("extend")
                    .fix("inline the rules you extend, or pass the extended file itself"),
            );
        }
        let mut global = Allowlist::default();
        for list in config.allowlist.iter().chain(&config.allowlists) {
            global.regexes.extend(compile_all(
                path,
                source,
                "allowlist.regexes",
                None,
                &list.regexes,
            )?);
            global.paths.extend(compile_all(
                path,
                source,
                "allowlist.paths",
                None,
                &list.paths,
            )?);
            global
                .stopwords
                .extend(list.stopwords.iter().map(|w| w.to_ascii_lowercase()));
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for spanned in &config.rules {
            let span = Some(spanned.span().start);
            let rule = spanned.get_ref();
            let key = format!("rules `{}`", rule.id);
            let regex = rule
                .regex
                .as_deref()
                .map(|pattern| lazy(path, source, &format!("{key}.regex"), span, pattern))
                .transpose()?;
            let path_regex = rule
                .path
                .as_deref()
                .map(|pattern| compile(path, source, &format!("{key}.path"), span, pattern))
                .transpose()?;
            if regex.is_none() && path_regex.is_none() {
                return Err(InputError::new(path, "a rule needs `regex` or `path`")
                    .key(key)
                    .at_offset(source, span)
                    .fix("add regex = '''…'''"));
            }
            let secret_group = match &regex {
                Some(regex) => checked_group(path, source, &key, span, regex, rule.secret_group)?,
                None => 0,
            };
            let mut allow = Allowlist::default();
            for list in rule.allowlist.iter().chain(&rule.allowlists) {
                allow.regexes.extend(compile_all(
                    path,
                    source,
                    &format!("{key}.allowlist"),
                    span,
                    &list.regexes,
                )?);
                allow.paths.extend(compile_all(
                    path,
                    source,
                    &format!("{key}.allowlist"),
                    span,
                    &list.paths,
                )?);
                allow
                    .stopwords
                    .extend(list.stopwords.iter().map(|w| w.to_ascii_lowercase()));
            }
            rules.push(Rule {
                id: rule.id.clone(),
                description: rule.description.clone().unwrap_or_else(|| rule.id.clone()),
                regex,
                secret_group,
                entropy: rule.entropy,
                severity: Severity::High,
                keywords: rule
                    .keywords
                    .iter()
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
                path: path_regex,
                allow,
                samples: Vec::new(),
            });
        }
        RulePack::assemble(path, source, rules, global)
    }

    fn assemble(
        path: &Path,
        source: &str,
        rules: Vec<Rule>,
        global: Allowlist,
    ) -> Result<RulePack, InputError> {
        let mut seen = std::collections::HashSet::new();
        for rule in &rules {
            if !seen.insert(rule.id.as_str()) {
                return Err(
                    InputError::new(path, format!("duplicate rule id `{}`", rule.id))
                        .at_offset(source, source.find(&format!("\"{}\"", rule.id)))
                        .fix("give every rule its own id"),
                );
            }
        }
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut ungated = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.keywords.is_empty() {
                if rule.regex.is_some() {
                    ungated.push(index);
                }
                continue;
            }
            for keyword in &rule.keywords {
                match patterns.iter().position(|p| p == keyword) {
                    Some(at) => keyword_rules[at].push(index),
                    None => {
                        patterns.push(keyword.clone());
                        keyword_rules.push(vec![index]);
                    }
                }
            }
        }
        let keywords = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .or_else(|_| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
            })
            .map_err(|error| {
                InputError::new(path, format!("cannot compile the keywords: {error}"))
            })?;
        Ok(RulePack {
            name: path.display().to_string(),
            rules,
            global,
            keywords,
            keyword_rules,
            ungated,
            source: source.to_string(),
        })
    }
}

fn checked_group(
    path: &Path,
    source: &str,
    key: &str,
    span: Option<usize>,
    regex: &LazyRegex,
    group: Option<usize>,
) -> Result<usize, InputError> {
    let groups = regex.captures_len() - 1;
    match group {
        Some(group) if group > groups => Err(InputError::new(
            path,
            format!("secret_group {group} does not exist: the regex has {groups} capture group(s)"),
        )
        .key(format!("{key}.secret_group"))
        .at_offset(source, span)
        .fix("name an existing group, or leave it out to use the whole match")),
        Some(group) => Ok(group),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITLEAKS: &str = r#"
title = "team rules"
[allowlist]
paths = ['''(^|/)testdata/''']
[[rules]]
id = "acme-token"
description = "ACME API token"
regex = '''acme_(?:live|test)_([a-z0-9]{24})'''
secretGroup = 1
keywords = ["acme_"]
[rules.allowlist]
stopwords = ["zzzzzz"]
[[rules]]
id = "pem-file"
description = "A PEM file"
path = '''\.pem$'''
[[rules]]
id = "no-keywords"
regex = '''SECRETVALUE[0-9]{6}'''
"#;

    #[test]
    fn gitleaks_configs_load_and_scan() {
        let pack = RulePack::parse(Path::new("gitleaks.toml"), GITLEAKS).unwrap();
        assert_eq!(pack.rules.len(), 3);
        let hits = pack.scan(
            "src/a.rs",
            b"let t = \"acme_live_abcdefghijklmnopqrstuvwx\";\nSECRETVALUE123456\n",
        );
        let rules: Vec<&str> = hits.iter().map(|h| h.rule.as_str()).collect();
        assert_eq!(rules, ["acme-token", "no-keywords"]);
        assert_eq!(
            hits[0].redacted, "abcd…[REDACTED]…wx",
            "secretGroup picks the secret"
        );
        assert!(
            pack.scan("testdata/a.rs", b"acme_live_abcdefghijklmnopqrstuvwx")
                .is_empty(),
            "global path allowlist"
        );
        assert!(
            pack.scan("a.rs", b"acme_test_zzzzzzabcdefghijklmnopqr")
                .is_empty(),
            "rule stopword"
        );
        assert_eq!(
            pack.scan("keys/server.pem", b"anything")[0].rule,
            "pem-file"
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let error = RulePack::parse(
            Path::new("g.toml"),
            "[[rules]]\nid = \"x\"\nregex = '''(?=lookahead)'''\n",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("`rules `x`.regex`") && error.fix.is_some(),
            "{error}"
        );
        let error = RulePack::parse(
            Path::new("g.toml"),
            "[[rules]]\nid = \"x\"\nregex = '''a(b)'''\nsecretGroup = 3\n",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("secret_group 3 does not exist"),
            "{error}"
        );
        let error =
            RulePack::parse(Path::new("g.toml"), "[extend]\nuseDefault = true\n").unwrap_err();
        assert!(error.to_string().contains("[extend]"), "{error}");
        let error = RulePack::parse(
            Path::new("c.toml"),
            "version = 1\n[[rule]]\nid = \"a\"\ndescription = \"d\"\nkeywords = []\nregex = 'x'\n",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("at least one keyword"),
            "{error}"
        );
        let error = RulePack::builtin("nope").unwrap_err();
        assert!(error.to_string().contains("use one of: default"), "{error}");
    }
}

//! SARIF 2.1.0 output for `verify --sarif` and `scan --sarif`: one run, ccfan as the tool, one result per finding
//! with its rule id, level, location and a redacted message, and the secret's fingerprint as a partial fingerprint.

use serde_json::{Value, json};

/// One result to report.
#[derive(Debug, Clone)]
pub struct SarifResult {
    /// Rule id.
    pub rule: String,
    /// Rule description (for the rule table).
    pub rule_description: String,
    /// `error`, `warning` or `note`.
    pub level: &'static str,
    /// The (redacted) message.
    pub message: String,
    /// File, if any.
    pub path: Option<String>,
    /// 1-based line, if any.
    pub line: Option<usize>,
    /// Fingerprint, if any.
    pub fingerprint: Option<String>,
}

/// A SARIF 2.1.0 log.
pub fn log(results: &[SarifResult]) -> Value {
    let mut rules: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r.rule.as_str(), r.rule_description.as_str()))
        .collect();
    rules.sort_unstable();
    rules.dedup_by(|a, b| a.0 == b.0);
    let rule_index = |id: &str| rules.iter().position(|(rule, _)| *rule == id).unwrap_or(0);
    let results: Vec<Value> = results
        .iter()
        .map(|result| {
            let mut value = json!({
                "ruleId": result.rule,
                "ruleIndex": rule_index(&result.rule),
                "level": result.level,
                "message": { "text": result.message },
            });
            if let Some(path) = &result.path {
                let mut location = json!({ "artifactLocation": { "uri": path } });
                if let Some(line) = result.line.filter(|&line| line > 0) {
                    location["region"] = json!({ "startLine": line });
                }
                value["locations"] = json!([{ "physicalLocation": location }]);
            }
            if let Some(fingerprint) = &result.fingerprint {
                value["partialFingerprints"] = json!({ "secretFingerprint/v1": fingerprint });
            }
            value
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "ccfan",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules.iter().map(|(id, description)| json!({
                        "id": id,
                        "shortDescription": { "text": description },
                    })).collect::<Vec<_>>(),
                }
            },
            "results": results,
        }]
    })
}

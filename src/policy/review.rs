//! Policy, `[review]`: the review stage — which worker profile reviews a change once the mechanical stages passed,
//! whether its verdict blocks (`required`) or only comments (`advisory`), how long it may take, and `cross`
//! (tasks of a run review each other with another profile than the author's). Profile names are checked at plan
//! time, where the tasks file's own profiles are known too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration;
use crate::input::InputError;
use crate::model::review::ReviewMode;

/// How long a review may take when the policy says nothing.
pub const DEFAULT_REVIEW_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `[review]` as resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSettings {
    /// The reviewer's worker profile (`None`: only `cross` picks one).
    pub worker: Option<String>,
    /// Whether its verdict blocks.
    pub mode: ReviewMode,
    /// Tasks of a run review each other with another profile than the author's.
    pub cross: bool,
    /// Wall-clock limit of one review.
    pub timeout: Duration,
    /// The file that declared it (for messages about its profile name).
    pub declared_in: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReviewSection {
    worker: Option<String>,
    mode: Option<Spanned<String>>,
    cross: Option<bool>,
    timeout: Option<Spanned<String>>,
    enabled: Option<bool>,
}

/// Parses a review mode, naming the key and line on failure.
pub fn mode(
    file: &Path,
    source: &str,
    key: &str,
    value: &Spanned<String>,
) -> Result<ReviewMode, InputError> {
    match value.get_ref().as_str() {
        "required" => Ok(ReviewMode::Required),
        "advisory" => Ok(ReviewMode::Advisory),
        other => Err(
            InputError::new(file, format!("`{other}` is not a review mode"))
                .key(key)
                .at_offset(source, Some(value.span().start))
                .fix(r#"write "required" (its verdict blocks) or "advisory" (comments only)"#),
        ),
    }
}

pub(super) fn resolve(
    file: &Path,
    source: &str,
    section: Option<ReviewSection>,
    base: Option<&ReviewSettings>,
) -> Result<Option<ReviewSettings>, InputError> {
    let Some(section) = section else {
        return Ok(base.cloned());
    };
    if section.enabled == Some(false) {
        return Ok(None);
    }
    let worker = section
        .worker
        .or_else(|| base.and_then(|base| base.worker.clone()));
    let cross = section
        .cross
        .or(base.map(|base| base.cross))
        .unwrap_or(false);
    if worker.is_none() && !cross {
        return Err(InputError::new(file, "[review] names no reviewer")
            .key("review.worker")
            .fix(r#"write worker = "NAME" (a worker profile), or cross = true to have the run's tasks review each other"#));
    }
    let mode = match &section.mode {
        Some(value) => mode(file, source, "review.mode", value)?,
        None => base.map_or(ReviewMode::Required, |base| base.mode),
    };
    let timeout = match &section.timeout {
        Some(value) => duration(file, source, "review.timeout", value)?,
        None => base.map_or(DEFAULT_REVIEW_TIMEOUT, |base| base.timeout),
    };
    Ok(Some(ReviewSettings {
        worker,
        mode,
        cross,
        timeout,
        declared_in: file.to_path_buf(),
    }))
}

//! MCP error mapping: bad arguments become JSON-RPC "invalid params" errors; a failed operation becomes a tool
//! result with `isError` and a structured `{code, message, retryable, details}` (a Rework or Rollback verdict is
//! neither: it is a normal result).

use rmcp::ErrorData;
use rmcp::handler::server::tool::IntoCallToolResult;
use rmcp::model::{CallToolResponse, CallToolResult};
use schemars::JsonSchema;
use serde::Serialize;

use crate::git::GitError;
use crate::input::InputError;
use crate::pipeline::PipelineError;
use crate::store::StoreError;

/// Why an operation failed. Documented in the README (MCP section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such run, task or attempt.
    NotFound,
    /// Another ccfan process carries the run now (retry after it finished: `status` with `wait_seconds`).
    Busy,
    /// The operation does not apply in the task's current state (the message says what does).
    Refused,
    /// `client_request_id` was used before for a different request.
    Conflict,
    /// The repository's policy (ccfan.toml) or a file it names is invalid.
    InvalidConfig,
    /// The policy's sandbox cannot run on this machine.
    SandboxUnavailable,
    /// The ccfan process for the operation failed before it started.
    StartFailed,
    /// Git failed.
    Git,
    /// ccfan failed (state database, files, supervision).
    Internal,
    /// The client cancelled the request (a long-poll stopped early).
    Cancelled,
}

/// A failed operation, as the tool result's structured content.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ToolError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
    /// Whether the same call may succeed later unchanged.
    pub retryable: bool,
    /// Context (file, key, fix, run, …).
    pub details: serde_json::Value,
}

impl ToolError {
    /// A failure with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ToolError {
            retryable: matches!(code, ErrorCode::Busy | ErrorCode::StartFailed),
            code,
            message: message.into(),
            details: serde_json::json!({}),
        }
    }

    /// With details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Why a tool call did not produce its result.
#[derive(Debug)]
pub enum Failure {
    /// The arguments are wrong: a JSON-RPC invalid-params error.
    Invalid(ErrorData),
    /// The operation failed: a tool result with `isError`.
    Tool(ToolError),
}

impl Failure {
    /// Bad arguments, with the field and the fix.
    pub fn invalid(field: &str, message: impl Into<String>, fix: &str) -> Failure {
        let message = message.into();
        Failure::Invalid(ErrorData::invalid_params(
            format!("{field}: {message}"),
            Some(serde_json::json!({ "field": field, "fix": fix })),
        ))
    }

    /// A failed operation.
    pub fn tool(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure::Tool(ToolError::new(code, message))
    }
}

impl From<ToolError> for Failure {
    fn from(error: ToolError) -> Self {
        Failure::Tool(error)
    }
}

impl IntoCallToolResult for Failure {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        match self {
            Failure::Invalid(error) => Err(error),
            Failure::Tool(error) => {
                let value = serde_json::to_value(&error)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                Ok(CallToolResult::structured_error(value).into())
            }
        }
    }
}

fn input_details(error: &InputError) -> serde_json::Value {
    serde_json::json!({
        "file": error.file.display().to_string(),
        "line": error.line,
        "key": error.key,
        "fix": error.fix,
    })
}

/// Maps a library error. `request_file` is the tasks file written for this call: an error in it is the
/// caller's arguments, reported as invalid params; any other input error is the repository's configuration.
pub fn from_pipeline(error: PipelineError, request_file: Option<&std::path::Path>) -> Failure {
    let message = format!("{error:#}");
    match error {
        PipelineError::Input(input) => {
            let in_request = request_file.is_some_and(|file| input.file == file)
                || input.file.as_os_str() == "<command line>"
                || input.file.as_os_str() == "<mcp>";
            if in_request {
                let field = input.key.clone().unwrap_or_else(|| "arguments".to_string());
                let fix = input.fix.clone().unwrap_or_default();
                Failure::invalid(&field, input.message.clone(), &fix)
            } else {
                ToolError::new(ErrorCode::InvalidConfig, message)
                    .details(input_details(&input))
                    .into()
            }
        }
        PipelineError::Store(StoreError::NoSuchRun(run)) => {
            ToolError::new(ErrorCode::NotFound, message)
                .details(serde_json::json!({ "run_id": run }))
                .into()
        }
        PipelineError::Store(StoreError::NoSuchTask { run, task }) => {
            ToolError::new(ErrorCode::NotFound, message)
                .details(serde_json::json!({ "run_id": run, "task_id": task }))
                .into()
        }
        PipelineError::Store(StoreError::Busy { run, pid }) => {
            ToolError::new(ErrorCode::Busy, message)
                .details(serde_json::json!({ "run_id": run, "pid": pid }))
                .into()
        }
        PipelineError::Sandbox(_) => ToolError::new(ErrorCode::SandboxUnavailable, message).into(),
        PipelineError::Git(GitError::BadRevision { rev, .. }) => Failure::invalid(
            "revision",
            format!("`{rev}` does not name a commit"),
            "pass a branch, tag or commit that exists",
        ),
        PipelineError::Git(_) => ToolError::new(ErrorCode::Git, message).into(),
        PipelineError::SetupFailed { .. } => ToolError::new(ErrorCode::StartFailed, message).into(),
        PipelineError::Store(_)
        | PipelineError::Io { .. }
        | PipelineError::Worker(_)
        | PipelineError::Stopped { .. } => ToolError::new(ErrorCode::Internal, message).into(),
    }
}

impl From<PipelineError> for Failure {
    fn from(error: PipelineError) -> Self {
        from_pipeline(error, None)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        from_pipeline(error.into(), None)
    }
}

impl From<GitError> for Failure {
    fn from(error: GitError) -> Self {
        from_pipeline(error.into(), None)
    }
}

/// A tool's arguments. Unlike rmcp's own wrapper, arguments that do not fit the input schema are a JSON-RPC
/// invalid-params error (as every other bad argument here), not a tool result.
#[derive(Debug, Clone)]
pub struct Parameters<P>(pub P);

impl<P: JsonSchema> JsonSchema for Parameters<P> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        P::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        P::json_schema(generator)
    }
}

impl<S, P>
    rmcp::handler::server::common::FromContextPart<
        rmcp::handler::server::tool::ToolCallContext<'_, S>,
    > for Parameters<P>
where
    P: serde::de::DeserializeOwned,
{
    fn from_context_part(
        context: &mut rmcp::handler::server::tool::ToolCallContext<'_, S>,
    ) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(serde_json::Value::Object(arguments))
            .map(Parameters)
            .map_err(|error| {
                ErrorData::invalid_params(
                    format!("invalid arguments: {error}"),
                    Some(serde_json::json!({
                        "fix": "pass arguments that match the tool's input schema (see tools/list)"
                    })),
                )
            })
    }
}

//! Errors a user can act on. Each variant's message says what was looked for and what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("config {file}: {detail}")]
    Config { file: String, detail: String },

    #[error("{0}")]
    Usage(String),

    #[error("no region: pass --region, set AWS_REGION, or set `region` in the profile or `regions` in amictl.toml")]
    NoRegion,

    #[error("unknown region {region:?}: {known}")]
    UnknownRegion { region: String, known: String },

    #[error("{0}")]
    Cloud(#[from] CloudError),

    #[error("{what} not found: looked in {looked_in}")]
    NotFound { what: String, looked_in: String },

    #[error("the inventory is incomplete: {0}")]
    Incomplete(String),

    #[error("{0}")]
    Other(String),

    /// Ctrl-C stopped a run; it was recorded as interrupted and can be continued.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// What kind of failure an AWS call had, so the CLI can say what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudErrorKind {
    /// The endpoint could not be reached (DNS, connection refused, timeout).
    Unreachable,
    /// No credentials, or credentials AWS rejected (expired, unknown key, bad signature).
    Credentials,
    /// Authenticated but not allowed.
    Permission,
    NotFound,
    Throttled,
    /// Anything else the service said.
    Service,
}

/// A failed AWS call.
#[derive(Debug, Clone, Error)]
#[error("{operation}: {message}{hint}", hint = self.hint())]
pub struct CloudError {
    pub operation: String,
    pub kind: CloudErrorKind,
    pub code: Option<String>,
    pub message: String,
}

impl Error {
    /// Names the endpoint in an error about a call that got no answer (timeout, refused).
    pub fn located(self, endpoint: &str) -> Error {
        match self {
            Error::Cloud(e) => Error::Cloud(e.located(endpoint)),
            other => other,
        }
    }
}

impl CloudError {
    /// Names `endpoint` when the call got no answer; other errors are left alone.
    pub fn located(mut self, endpoint: &str) -> CloudError {
        if self.kind == CloudErrorKind::Unreachable && !self.message.contains(endpoint) {
            let limit = if self.message.contains("timed out") || self.message.contains("timeout") {
                " within --call-timeout"
            } else {
                ""
            };
            self.message = format!("no answer from {endpoint}{limit}: {}", self.message);
        }
        self
    }

    pub fn new(operation: impl Into<String>, kind: CloudErrorKind, message: impl Into<String>) -> Self {
        CloudError { operation: operation.into(), kind, code: None, message: message.into() }
    }

    fn hint(&self) -> &'static str {
        match self.kind {
            CloudErrorKind::Unreachable => {
                " (check --endpoint-url / AWS_ENDPOINT_URL, the region name, and the network)"
            }
            CloudErrorKind::Credentials => {
                " (check AWS_PROFILE / --profile, AWS_ACCESS_KEY_ID, or refresh the session with `aws sso login`)"
            }
            CloudErrorKind::Permission => " (the role or user lacks an IAM permission for this call)",
            _ => "",
        }
    }
}

impl From<crate::config::RuleError> for Error {
    fn from(e: crate::config::RuleError) -> Self {
        Error::Usage(e.to_string())
    }
}

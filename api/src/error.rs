//! Errors: [`Error`] of starting the server, [`ApiError`] of one request.

use std::{net::SocketAddr, path::PathBuf};

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// An error starting or running the API server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A non-loopback listen address without a bearer token.
    #[error(
        "refusing to listen on {listen} without a bearer token: captured packets are sensitive; configure a token (e.g. --token-file) or listen on 127.0.0.1"
    )]
    TokenRequired {
        /// The address asked for.
        listen: SocketAddr,
    },
    /// An option out of range.
    #[error("invalid API option `{option}`: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The data directory is missing or not a directory.
    #[error("data directory `{}` is not a readable directory", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Binding the listen address failed.
    #[error("failed to listen on {listen}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or the server failed.
    #[error("the API server failed")]
    Server {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The API's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The answer to a request that failed: a status and `{"error": ..., "parameter": ...}`.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: a parameter (or the path) is malformed.
    BadRequest {
        message: String,
        parameter: Option<String>,
    },
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404.
    NotFound(String),
    /// 413: the answer would exceed a configured bound.
    TooLarge { message: String, parameter: String },
    /// 503: the request ran out of time.
    Timeout,
    /// 500: logged, answered generically.
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(parameter: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            parameter: Some(parameter.to_owned()),
        }
    }

    pub(crate) fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(format!("{context}: {e}"))
    }
}

impl From<tapvault_storage::Error> for ApiError {
    fn from(e: tapvault_storage::Error) -> Self {
        match e {
            tapvault_storage::Error::Interrupted => ApiError::Timeout,
            e => ApiError::internal("flow store", error_chain(&e)),
        }
    }
}

impl From<tapvault_storage::PcapError> for ApiError {
    fn from(e: tapvault_storage::PcapError) -> Self {
        ApiError::internal("packet store", error_chain(&e))
    }
}

/// An error and its sources on one line, for the log.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub(crate) fn json_error(status: StatusCode, message: &str, parameter: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "error": message });
    if let Some(p) = parameter {
        body["parameter"] = p.into();
    }
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest { message, parameter } => {
                json_error(StatusCode::BAD_REQUEST, &message, parameter.as_deref())
            }
            ApiError::Unauthorized => {
                let mut r = json_error(
                    StatusCode::UNAUTHORIZED,
                    "missing or invalid bearer token (send `Authorization: Bearer <token>`)",
                    None,
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tapvault\""),
                );
                r
            }
            ApiError::NotFound(message) => json_error(StatusCode::NOT_FOUND, &message, None),
            ApiError::TooLarge { message, parameter } => {
                json_error(StatusCode::PAYLOAD_TOO_LARGE, &message, Some(&parameter))
            }
            ApiError::Timeout => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request ran out of time; narrow the time range or add filters",
                None,
            ),
            ApiError::Internal(detail) => {
                eprintln!("tapvault api: internal error: {detail}");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", None)
            }
        }
    }
}

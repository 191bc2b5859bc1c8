//! The `from`/`to` time window of a request.

use crate::{
    error::ApiError,
    params::{ParamSpec, Params},
    time::{format_rfc3339, parse_time},
};

pub(crate) const FROM: ParamSpec = ParamSpec {
    name: "from",
    repeated: false,
    schema: r#"{"type":"string"}"#,
    example: "15m",
    description: "Start of the window (required): RFC 3339 (2024-05-01T10:02:00Z, 2024-05-01T12:02:00.5+02:00) or relative to now (30s, 15m, 2h, 1d; `now`). Flows overlapping the window are returned (first_seen <= to and last_seen >= from).",
};
pub(crate) const TO: ParamSpec = ParamSpec {
    name: "to",
    repeated: false,
    schema: r#"{"type":"string"}"#,
    example: "now",
    description: "End of the window, inclusive (default now); same syntax as `from`, must not be before it.",
};
pub(crate) const FROM_OPT: ParamSpec = ParamSpec {
    name: "from",
    repeated: false,
    schema: r#"{"type":"string"}"#,
    example: "1d",
    description: "Optional start of the window searched (default: the whole store); RFC 3339 or relative (15m, 2h, 1d).",
};
pub(crate) const TO_OPT: ParamSpec = ParamSpec {
    name: "to",
    repeated: false,
    schema: r#"{"type":"string"}"#,
    example: "now",
    description: "Optional end of the window searched (default: the whole store, or now when `from` is given).",
};

/// `[from, to]`, nanoseconds, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) from: i64,
    pub(crate) to: i64,
}

fn time(p: &Params, name: &str, now: i64) -> Result<Option<i64>, ApiError> {
    p.get(name)
        .map(|v| parse_time(v, now).map_err(|e| ApiError::bad(name, e)))
        .transpose()
}

impl Window {
    /// `from` (required when `required`, else the default is 1 hour before `to`) and `to`
    /// (default now).
    pub(crate) fn from_params(p: &Params, now: i64, required: bool) -> Result<Window, ApiError> {
        let to = time(p, "to", now)?.unwrap_or(now);
        let from = match time(p, "from", now)? {
            Some(f) => f,
            None if required => {
                return Err(ApiError::bad(
                    "from",
                    "missing `from` (RFC 3339 or relative such as 15m)",
                ));
            }
            None => to.saturating_sub(3_600_000_000_000),
        };
        check(from, to)
    }

    /// Both optional: the whole store by default.
    pub(crate) fn optional(p: &Params, now: i64) -> Result<Window, ApiError> {
        let from = time(p, "from", now)?;
        let to = time(p, "to", now)?;
        let (from, to) = match (from, to) {
            (None, None) => (i64::MIN, i64::MAX),
            (Some(f), None) => (f, now.max(f)),
            (None, Some(t)) => (i64::MIN, t),
            (Some(f), Some(t)) => (f, t),
        };
        check(from, to)
    }
}

fn check(from: i64, to: i64) -> Result<Window, ApiError> {
    if from > to {
        return Err(ApiError::bad(
            "to",
            format!(
                "inverted range: `to` ({}) is before `from` ({})",
                format_rfc3339(to),
                format_rfc3339(from)
            ),
        ));
    }
    Ok(Window { from, to })
}

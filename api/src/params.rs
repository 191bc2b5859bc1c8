//! Strict query-string parsing: every endpoint names the parameters it accepts (the same
//! list documents them in OpenAPI); anything else is a 400.

use crate::error::ApiError;

/// A documented query parameter.
#[derive(Debug)]
pub(crate) struct ParamSpec {
    pub(crate) name: &'static str,
    /// May be given more than once.
    pub(crate) repeated: bool,
    /// JSON schema of one value (OpenAPI).
    pub(crate) schema: &'static str,
    /// An example that the endpoint accepts (OpenAPI `example`, and the test that every
    /// documented parameter is accepted).
    pub(crate) example: &'static str,
    pub(crate) description: &'static str,
}

/// The parameters of one request, in order, checked against a spec list.
#[derive(Debug)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `query` (without `?`); unknown names and repeats of single parameters are
    /// errors.
    pub(crate) fn parse(query: Option<&str>, spec: &[ParamSpec]) -> Result<Params, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k.is_empty() && v.is_empty() {
                continue;
            }
            let Some(s) = spec.iter().find(|s| s.name == k) else {
                let known: Vec<&str> = spec.iter().map(|s| s.name).collect();
                return Err(ApiError::bad(
                    &k,
                    if known.is_empty() {
                        format!("unknown parameter `{k}`: this endpoint takes no parameters")
                    } else {
                        format!(
                            "unknown parameter `{k}`; this endpoint accepts: {}",
                            known.join(", ")
                        )
                    },
                ));
            };
            if !s.repeated && pairs.iter().any(|(n, _)| *n == k) {
                return Err(ApiError::bad(
                    &k,
                    format!("parameter `{k}` given more than once"),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// The value of a single parameter.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs (for the cursor's fingerprint).
    pub(crate) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// A parameter parsed as an integer in `range`.
    pub(crate) fn int(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad(
                name,
                format!(
                    "`{v}` is not an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }
}

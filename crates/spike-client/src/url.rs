//! [`BaseUrl`]: a server's `https://host[:port][/path]` base URL and Go-style path joining.

use std::fmt;

use crate::error::ClientError;

/// The default HTTPS port when the URL names none.
const DEFAULT_PORT: u16 = 443;

/// A parsed SPIKE server base URL, e.g. `https://localhost:8553`.
///
/// Only `https` is accepted. A path prefix is allowed and joined like Go's `url.JoinPath`
/// (SPIKE servers route exact paths, so a prefix only makes sense behind a proxy). Query and
/// fragment are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    original: String,
    host: String,
    port: u16,
    path: String,
}

impl BaseUrl {
    /// Parses `https://host[:port][/path]`; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] saying what is wrong.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let trimmed = url.trim();
        let invalid = |reason: &'static str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = trimmed.parse().map_err(|_| invalid("not a valid URL"))?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(_) => return Err(invalid("the scheme must be https")),
            None => return Err(invalid("missing scheme (expected https://host:port)")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not allowed"));
        }
        let raw_host = authority.host();
        let host = raw_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw_host);
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let rest = authority
            .as_str()
            .strip_prefix(raw_host)
            .ok_or_else(|| invalid("malformed host"))?;
        let port = match rest.strip_prefix(':') {
            None if rest.is_empty() => DEFAULT_PORT,
            None => return Err(invalid("malformed port")),
            Some(p) => p.parse::<u16>().map_err(|_| invalid("invalid port"))?,
        };
        if port == 0 {
            return Err(invalid("port 0"));
        }
        if uri.query().is_some() || trimmed.contains('#') {
            return Err(invalid("query and fragment are not allowed"));
        }
        let path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            original: trimmed.to_owned(),
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header value (`host:port`, IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// Joins a route path (`/v1/...`) onto the base path like Go's `url.JoinPath`, then
    /// appends `?action=<action>` when given: the request target sent on the wire.
    pub fn request_target(&self, path: &str, action: Option<&str>) -> String {
        let mut target = String::with_capacity(self.path.len() + path.len() + 16);
        target.push_str(&self.path);
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            target.push('/');
            target.push_str(segment);
        }
        // Go keeps a trailing slash of the joined element (and a bare `/`).
        if target.is_empty() || (path.ends_with('/') && !target.ends_with('/')) {
            target.push('/');
        }
        if let Some(action) = action {
            target.push_str("?action=");
            target.push_str(action);
        }
        target
    }

    /// The full URL of a request target, for messages.
    pub fn full_url(&self, target: &str) -> String {
        format!("https://{}{target}", self.authority())
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spike_urls() {
        let u = BaseUrl::parse("https://localhost:8553").unwrap();
        assert_eq!((u.host(), u.port()), ("localhost", 8553));
        assert_eq!(u.authority(), "localhost:8553");
        assert_eq!(
            u.request_target("/v1/store/secrets", None),
            "/v1/store/secrets"
        );
        assert_eq!(
            u.request_target("/v1/store/secrets", Some("get")),
            "/v1/store/secrets?action=get"
        );
        let u = BaseUrl::parse(" https://[::1]:8443/ ").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 8443));
        assert_eq!(u.authority(), "[::1]:8443");
        assert_eq!(u.request_target("/v1/store/shard", None), "/v1/store/shard");
        assert_eq!(
            u.request_target("/v1/store/shard/", None),
            "/v1/store/shard/"
        );
        assert_eq!(u.request_target("//v1//x", None), "/v1/x");
        assert_eq!(u.request_target("/", None), "/");
        let u = BaseUrl::parse("https://nexus.example").unwrap();
        assert_eq!(u.port(), 443);
        let u = BaseUrl::parse("HTTPS://10.0.0.1:1/prefix/").unwrap();
        assert_eq!(
            u.request_target("/v1/cipher/encrypt", None),
            "/prefix/v1/cipher/encrypt"
        );
        assert_eq!(u.full_url("/x"), "https://10.0.0.1:1/x");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "",
            "localhost:8553",
            "http://localhost:8553",
            "https://",
            "https://:8553",
            "https://h:0",
            "https://h:99999",
            "https://h:1?x=1",
            "https://h:1#f",
            "https://user@h:1",
            "https://h:",
        ] {
            assert!(
                matches!(BaseUrl::parse(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad:?} must be rejected"
            );
        }
    }
}

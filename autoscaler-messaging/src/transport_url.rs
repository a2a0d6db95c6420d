//! The broker address, `transport_url`, parsed as oslo.messaging parses it.
//!
//! Form: `rabbit://[user[:pass]@]host[:port][,[user[:pass]@]host[:port]...]/[vhost][?query]`.
//! - schemes `rabbit` and `amqp` (plain AMQP 0-9-1), `amqps` (TLS; also `rabbit://...?ssl=1`);
//! - several comma-separated hosts, tried in order for failover (oslo.messaging's
//!   `TransportURL.parse` splits the netloc on commas the same way);
//! - user name and password percent-decoded (a `@` or `:` in a password is written `%40`/`%3A`);
//! - an empty virtual host (DevStack writes `...:5672/`) means `/`;
//! - query parameters: `heartbeat` (seconds), `ssl`, `connection_timeout` (milliseconds);
//!   others are kept and reported by [`TransportUrl::unknown_query_params`].
//!
//! Pure: no I/O. [`fmt::Display`] never shows passwords, so the value can be logged.

use std::{collections::BTreeMap, fmt, str::FromStr};

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use percent_encoding::percent_decode_str;

/// AMQP's registered ports.
const AMQP_PORT: u16 = 5672;
const AMQPS_PORT: u16 = 5671;
/// oslo.messaging's rabbit driver falls back to these when a host names no user.
const DEFAULT_USER: &str = "guest";
const DEFAULT_PASSWORD: &str = "guest";

/// One broker of a (possibly clustered) transport.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerHost {
    pub username: String,
    pub password: String,
    pub hostname: String,
    pub port: u16,
}

impl fmt::Debug for BrokerHost {
    // Hand-written so that a `{:?}` in a log line cannot leak the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerHost")
            .field("username", &self.username)
            .field("password", &"***")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .finish()
    }
}

impl fmt::Display for BrokerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.hostname.contains(':') {
            format!("[{}]", self.hostname)
        } else {
            self.hostname.clone()
        };
        write!(f, "{}@{}:{}", self.username, host, self.port)
    }
}

/// A parsed `transport_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportUrl {
    /// The scheme as written (`rabbit`, `amqp` or `amqps`).
    pub scheme: String,
    /// Brokers in the order they are tried. Never empty.
    pub hosts: Vec<BrokerHost>,
    /// Decoded virtual host; `/` when the URL leaves it empty.
    pub virtual_host: String,
    /// TLS, from the `amqps` scheme or `ssl=1|true|yes`.
    pub ssl: bool,
    /// AMQP heartbeat in seconds asked for by the URL (`heartbeat=N`); `None` lets the
    /// configuration decide.
    pub heartbeat: Option<u16>,
    /// TCP connect timeout in milliseconds (`connection_timeout=N`).
    pub connection_timeout_ms: Option<u64>,
    /// Query parameters this client does not use, kept so they can be reported.
    pub other_params: BTreeMap<String, String>,
}

/// Why a `transport_url` was refused. The URL itself is never echoed, as it may hold a
/// password; callers add the file and option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportUrlError {
    #[error("expected a URL of the form rabbit://user:pass@host:port/vhost")]
    NotAUrl,
    #[error("unsupported scheme {0:?}: expected rabbit, amqp or amqps")]
    Scheme(String),
    #[error("no broker host given")]
    NoHost,
    #[error("host entry {index} has an empty host name")]
    EmptyHost { index: usize },
    #[error("host entry {index} has an invalid port {port:?}: expected 1-65535")]
    Port { index: usize, port: String },
    #[error("host entry {index} has an unterminated IPv6 address")]
    Ipv6 { index: usize },
    #[error("credentials of host entry {index} are not valid UTF-8 after percent-decoding")]
    Encoding { index: usize },
    #[error("query parameter {name}={value:?}: expected {expected}")]
    Query {
        name: String,
        value: String,
        expected: &'static str,
    },
}

impl FromStr for TransportUrl {
    type Err = TransportUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or(TransportUrlError::NotAUrl)?;
        let scheme = scheme.to_ascii_lowercase();
        let mut ssl = match scheme.as_str() {
            "rabbit" | "amqp" => false,
            "amqps" => true,
            _ => return Err(TransportUrlError::Scheme(scheme)),
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, q),
            None => (rest, ""),
        };
        let (netloc, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };

        let mut heartbeat = None;
        let mut connection_timeout_ms = None;
        let mut other_params = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).unwrap_or_else(|| value.to_owned());
            let bad = |expected| TransportUrlError::Query {
                name: name.to_owned(),
                value: value.clone(),
                expected,
            };
            match name {
                "heartbeat" => {
                    heartbeat = Some(value.parse().map_err(|_| bad("seconds, 0-65535"))?)
                }
                "connection_timeout" => {
                    connection_timeout_ms = Some(value.parse().map_err(|_| bad("milliseconds"))?)
                }
                "ssl" => {
                    ssl = match value.to_ascii_lowercase().as_str() {
                        "1" | "true" | "yes" | "on" => true,
                        "0" | "false" | "no" | "off" => false,
                        _ => return Err(bad("a boolean (1/0, true/false)")),
                    }
                }
                _ => {
                    other_params.insert(name.to_owned(), value);
                }
            }
        }

        let default_port = if ssl { AMQPS_PORT } else { AMQP_PORT };
        let mut hosts = Vec::new();
        for (index, entry) in netloc.split(',').enumerate() {
            if entry.is_empty() {
                continue;
            }
            hosts.push(parse_host(index + 1, entry, default_port)?);
        }
        if hosts.is_empty() {
            return Err(TransportUrlError::NoHost);
        }
        let virtual_host = match decode(path) {
            Some(v) if !v.is_empty() => v,
            _ => "/".to_owned(),
        };
        Ok(TransportUrl {
            scheme,
            hosts,
            virtual_host,
            ssl,
            heartbeat,
            connection_timeout_ms,
            other_params,
        })
    }
}

fn decode(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn parse_host(
    index: usize,
    entry: &str,
    default_port: u16,
) -> Result<BrokerHost, TransportUrlError> {
    // The last '@' separates credentials: an unencoded '@' in a password is common in
    // hand-written files and this keeps it working.
    let (userinfo, hostport) = match entry.rfind('@') {
        Some(i) => (Some(&entry[..i]), &entry[i + 1..]),
        None => (None, entry),
    };
    let (username, password) = match userinfo {
        Some(info) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            let user = decode(user).ok_or(TransportUrlError::Encoding { index })?;
            let pass = decode(pass).ok_or(TransportUrlError::Encoding { index })?;
            (user, pass)
        }
        None => (DEFAULT_USER.to_owned(), DEFAULT_PASSWORD.to_owned()),
    };
    let (hostname, port_text) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or(TransportUrlError::Ipv6 { index })?;
        (addr, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if hostname.is_empty() {
        return Err(TransportUrlError::EmptyHost { index });
    }
    let port = match port_text {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(TransportUrlError::Port {
                    index,
                    port: p.to_owned(),
                })
            }
        },
    };
    Ok(BrokerHost {
        username,
        password,
        hostname: hostname.to_owned(),
        port,
    })
}

impl TransportUrl {
    /// The lapin URI for broker `index` (modulo the number of hosts), with `heartbeat`
    /// used when the URL itself does not set one.
    pub fn amqp_uri(&self, index: usize, heartbeat: Option<u16>) -> AMQPUri {
        let host = &self.hosts[index % self.hosts.len()];
        AMQPUri {
            scheme: if self.ssl {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: host.username.clone(),
                    password: host.password.clone(),
                },
                host: host.hostname.clone(),
                port: host.port,
            },
            vhost: self.virtual_host.clone(),
            query: AMQPQueryString {
                heartbeat: self.heartbeat.or(heartbeat),
                connection_timeout: self.connection_timeout_ms,
                ..AMQPQueryString::default()
            },
        }
    }

    /// The URL *with* its passwords, re-encoded, for the configuration the conductor hands
    /// to its VMs' agents. Never log it: [`fmt::Display`] is the loggable form.
    pub fn to_secret_string(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        // Unreserved characters (RFC 3986) stay as they are.
        const CREDENTIAL: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|h| {
                let host = if h.hostname.contains(':') {
                    format!("[{}]", h.hostname)
                } else {
                    h.hostname.clone()
                };
                format!(
                    "{}:{}@{host}:{}",
                    utf8_percent_encode(&h.username, CREDENTIAL),
                    utf8_percent_encode(&h.password, CREDENTIAL),
                    h.port
                )
            })
            .collect();
        let vhost = if self.virtual_host == "/" {
            String::new()
        } else {
            utf8_percent_encode(&self.virtual_host, CREDENTIAL).to_string()
        };
        let mut query: Vec<String> = Vec::new();
        if let Some(h) = self.heartbeat {
            query.push(format!("heartbeat={h}"));
        }
        if self.ssl && self.scheme != "amqps" {
            query.push("ssl=1".into());
        }
        if let Some(t) = self.connection_timeout_ms {
            query.push(format!("connection_timeout={t}"));
        }
        for (k, v) in &self.other_params {
            query.push(format!("{k}={}", utf8_percent_encode(v, CREDENTIAL)));
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        format!("{}://{}/{vhost}{query}", self.scheme, hosts.join(","))
    }

    /// Query parameters present in the URL that this client ignores.
    pub fn unknown_query_params(&self) -> impl Iterator<Item = &str> {
        self.other_params.keys().map(String::as_str)
    }
}

impl fmt::Display for TransportUrl {
    /// The URL without passwords, for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        for (i, host) in self.hosts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{host}")?;
        }
        let vhost = if self.virtual_host == "/" {
            String::new()
        } else {
            percent_encoding::utf8_percent_encode(
                &self.virtual_host,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string()
        };
        write!(f, "/{vhost}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TransportUrl {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn devstack_form_has_default_vhost() {
        // DevStack's get_transport_url writes exactly this shape.
        let url = parse("rabbit://stackrabbit:secret@10.0.0.5:5672/");
        assert_eq!(url.hosts.len(), 1);
        assert_eq!(url.hosts[0].username, "stackrabbit");
        assert_eq!(url.hosts[0].password, "secret");
        assert_eq!(url.hosts[0].hostname, "10.0.0.5");
        assert_eq!(url.hosts[0].port, 5672);
        assert_eq!(url.virtual_host, "/");
        assert!(!url.ssl);
    }

    #[test]
    fn several_hosts_keep_their_order_and_credentials() {
        let url = parse("rabbit://a:pa@h1:5672,b:pb@h2:5673,h3/prod");
        let names: Vec<_> = url
            .hosts
            .iter()
            .map(|h| (h.username.as_str(), h.hostname.as_str(), h.port))
            .collect();
        assert_eq!(
            names,
            [("a", "h1", 5672), ("b", "h2", 5673), ("guest", "h3", 5672)]
        );
        assert_eq!(url.virtual_host, "prod");
        assert_eq!(url.amqp_uri(1, None).authority.host, "h2");
        assert_eq!(url.amqp_uri(4, None).authority.host, "h2");
    }

    #[test]
    fn encoded_credentials_are_decoded() {
        let url = parse("amqp://us%40er:p%40ss%3Aw%2Fo%25rd@localhost/%2Fvh");
        assert_eq!(url.hosts[0].username, "us@er");
        assert_eq!(url.hosts[0].password, "p@ss:w/o%rd");
        assert_eq!(url.virtual_host, "/vh");
    }

    #[test]
    fn raw_at_sign_in_password_still_parses() {
        let url = parse("rabbit://user:p@ss@host:5672/");
        assert_eq!(url.hosts[0].password, "p@ss");
        assert_eq!(url.hosts[0].hostname, "host");
    }

    #[test]
    fn query_parameters() {
        let url = parse("rabbit://h/?heartbeat=30&ssl=1&connection_timeout=2000&region=x");
        assert_eq!(url.heartbeat, Some(30));
        assert!(url.ssl);
        assert_eq!(url.hosts[0].port, AMQPS_PORT);
        assert_eq!(url.connection_timeout_ms, Some(2000));
        assert_eq!(url.unknown_query_params().collect::<Vec<_>>(), ["region"]);
        let uri = url.amqp_uri(0, Some(60));
        assert_eq!(uri.query.heartbeat, Some(30));
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(
            parse("rabbit://h/").amqp_uri(0, Some(60)).query.heartbeat,
            Some(60)
        );
    }

    #[test]
    fn ipv6_hosts() {
        let url = parse("rabbit://u:p@[::1]:5673,[fe80::2]/");
        assert_eq!(url.hosts[0].hostname, "::1");
        assert_eq!(url.hosts[0].port, 5673);
        assert_eq!(url.hosts[1].hostname, "fe80::2");
        assert_eq!(url.hosts[1].port, 5672);
        assert_eq!(
            url.to_string(),
            "rabbit://u@[::1]:5673,guest@[fe80::2]:5672/"
        );
    }

    #[test]
    fn secret_string_round_trips() {
        for text in [
            "rabbit://us%40er:p%40ss%3Aw%2Fo%25rd@h1:5672,b:c@[::1]:5673/%2Fvh?heartbeat=30&ssl=1&region=x",
            "amqp://guest:guest@127.0.0.1:5672/",
        ] {
            let url = parse(text);
            assert_eq!(parse(&url.to_secret_string()), url, "{text}");
        }
    }

    #[test]
    fn display_and_debug_hide_passwords() {
        let url = parse("rabbit://user:topsecret@h1:5672,user:topsecret@h2:5672/");
        assert_eq!(url.to_string(), "rabbit://user@h1:5672,user@h2:5672/");
        assert!(!format!("{url:?}").contains("topsecret"));
    }

    #[test]
    fn errors_say_what_was_expected() {
        let cases = [
            ("localhost:5672", TransportUrlError::NotAUrl),
            ("kafka://h/", TransportUrlError::Scheme("kafka".into())),
            ("rabbit:///", TransportUrlError::NoHost),
            ("rabbit://u:p@/", TransportUrlError::EmptyHost { index: 1 }),
            (
                "rabbit://h1,h2:99999/",
                TransportUrlError::Port {
                    index: 2,
                    port: "99999".into(),
                },
            ),
            ("rabbit://[::1/", TransportUrlError::Ipv6 { index: 1 }),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<TransportUrl>().unwrap_err(), want, "{text}");
        }
        let err = "rabbit://h/?heartbeat=soon"
            .parse::<TransportUrl>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "query parameter heartbeat=\"soon\": expected seconds, 0-65535"
        );
    }
}

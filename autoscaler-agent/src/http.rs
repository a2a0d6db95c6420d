//! A tiny HTTP/1.0 client for the agent's few local requests: the web role's check URL
//! and mod_jk's status worker (jkstatus) on the splitter. Both are on the VM itself, so
//! plain `http://`, one GET per connection, no redirects, no TLS, no chunked encoding
//! (an HTTP/1.0 request gets an HTTP/1.0-style answer: the body ends when the server
//! closes), and a cap on what is read. That is all the agent needs, without an HTTP
//! client crate.
//!
//! [`parse_response`] is pure; [`get`] is the I/O shell around it.

use std::{fmt, str::FromStr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The most of a response that is read, in bytes. jkstatus's `?mime=prop` answer is
/// about 2 KiB per member, so this holds a pool of a few hundred members.
pub(crate) const MAX_RESPONSE: usize = 1024 * 1024;

/// An `http://host:port/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// A name or an IPv4 address; an IPv6 address without its brackets.
    host: String,
    port: u16,
    /// The path with its query, starting with `/`.
    target: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not a plain http:// URL: {problem}")]
pub(crate) struct UrlError {
    url: String,
    problem: &'static str,
}

impl FromStr for HttpUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |problem| UrlError {
            url: url.to_owned(),
            problem,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        if rest
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(bad("it contains white space or control characters"));
        }
        let (authority, target) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        // A fragment is not sent to the server.
        let target = target.split('#').next().unwrap_or("/");
        if authority.contains('@') {
            return Err(bad("credentials are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not 1-65535"))?,
        };
        Ok(HttpUrl {
            host: host.to_owned(),
            port,
            target: target.to_owned(),
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.target)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.target)
        }
    }
}

impl HttpUrl {
    /// The host, when it is an IP address (the address a local server listens on).
    pub(crate) fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }

    /// This URL with its query replaced by `query` (without the `?`).
    pub(crate) fn with_query(&self, query: &str) -> HttpUrl {
        let path = self.target.split('?').next().unwrap_or("/");
        HttpUrl {
            host: self.host.clone(),
            port: self.port,
            target: format!("{path}?{query}"),
        }
    }

    /// This URL's server with `path` (and no query).
    pub(crate) fn with_path(&self, path: &str) -> HttpUrl {
        HttpUrl {
            host: self.host.clone(),
            port: self.port,
            target: if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            },
        }
    }

    /// `host:port`, as a socket address to connect to and a `Host` header.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A response: its status and its body as text (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("GET {url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("GET {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("GET {url}: the answer is longer than {MAX_RESPONSE} bytes")]
    TooLong { url: String },
    #[error("GET {url}: malformed answer: {problem}")]
    Malformed { url: String, problem: &'static str },
}

/// GETs `url`, all of it (connect, send, read to the end) within `timeout`.
pub(crate) async fn get(url: &HttpUrl, timeout: Duration) -> Result<Response, HttpError> {
    get_as(url, timeout, None).await
}

/// [`get`] with an `Authorization` header's value (never logged, never in an error).
pub(crate) async fn get_as(
    url: &HttpUrl,
    timeout: Duration,
    authorization: Option<&str>,
) -> Result<Response, HttpError> {
    let exchange = async {
        let mut stream = TcpStream::connect(url.authority()).await?;
        let authorization = authorization
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: autoscaler-agent\r\n{authorization}Connection: close\r\n\r\n",
            url.target,
            url.authority()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(4096);
        // One byte more than the cap tells "too long" from "exactly the cap".
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut buffer)
            .await?;
        Ok::<_, std::io::Error>(buffer)
    };
    let bytes = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(HttpError::Timeout {
                url: url.to_string(),
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(HttpError::Io {
                url: url.to_string(),
                source,
            })
        }
        Ok(Ok(bytes)) => bytes,
    };
    if bytes.len() > MAX_RESPONSE {
        return Err(HttpError::TooLong {
            url: url.to_string(),
        });
    }
    parse_response(&bytes).map_err(|problem| HttpError::Malformed {
        url: url.to_string(),
        problem,
    })
}

/// Parses a whole HTTP/1.x response read to the end of the connection. A
/// `Content-Length` shorter than what came shortens the body; a chunked body is refused
/// (an HTTP/1.0 request must not get one).
pub(crate) fn parse_response(bytes: &[u8]) -> Result<Response, &'static str> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            // Tolerate bare LF line ends.
            bytes
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .ok_or("no end of the header")?;
    let head = std::str::from_utf8(&bytes[..head_end.0]).map_err(|_| "header is not text")?;
    let mut lines = head.lines();
    let status_line = lines.next().ok_or("no status line")?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err("not an HTTP/1.x status line");
    }
    let status = parts
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..=599).contains(code))
        .ok_or("no three-digit status")?;
    let mut body = &bytes[head_end.1..];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value.parse::<usize>().map_err(|_| "bad Content-Length")?;
            if length > body.len() {
                return Err("body shorter than its Content-Length");
            }
            body = &body[..length];
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err("transfer encodings are not supported");
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print() {
        let url: HttpUrl = "http://127.0.1.10:8000/jkmanager/".parse().unwrap();
        assert_eq!(url.authority(), "127.0.1.10:8000");
        assert_eq!(url.target, "/jkmanager/");
        assert_eq!(
            url.with_query("mime=prop").to_string(),
            "http://127.0.1.10:8000/jkmanager/?mime=prop"
        );
        let url: HttpUrl = "http://localhost".parse().unwrap();
        assert_eq!((url.port, url.target.as_str()), (80, "/"));
        let url: HttpUrl = "http://[::1]:81/a?b=c#frag".parse().unwrap();
        assert_eq!(url.authority(), "[::1]:81");
        assert_eq!(url.target, "/a?b=c");
        assert_eq!(url.with_query("x").to_string(), "http://[::1]:81/a?x");
        assert_eq!(
            url.with_path("/webserver/").to_string(),
            "http://[::1]:81/webserver/"
        );
        assert_eq!(url.with_path("w").to_string(), "http://[::1]:81/w");
        for bad in [
            "https://h/",
            "http:///x",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h/a b",
            "ftp://h/",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_parse() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello, and more",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        // No length: the body runs to the end of the connection.
        let r = parse_response(b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "busy\n"));
        let r = parse_response(b"HTTP/1.1 204 No Content\n\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (204, ""));
    }

    #[test]
    fn malformed_responses_are_errors() {
        for (bytes, want) in [
            (&b""[..], "no end of the header"),
            (b"HTTP/1.1 200 OK\r\n", "no end of the header"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "no three-digit status"),
            (b"HTTP/1.1 abc OK\r\n\r\n", "no three-digit status"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "body shorter than its Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "transfer encodings are not supported",
            ),
        ] {
            assert_eq!(parse_response(bytes), Err(want));
        }
    }

    #[tokio::test]
    async fn get_against_a_local_listener() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let n = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let url: HttpUrl = format!("http://127.0.0.1:{port}/x?mime=prop")
            .parse()
            .unwrap();
        let response = get(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "ok"));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /x?mime=prop HTTP/1.0\r\nHost: 127.0.0.1:"),
            "{request}"
        );

        // Nobody listening: an I/O error, not a panic.
        drop(get(&url, Duration::from_secs(5)).await.unwrap_err());
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepted by the kernel's backlog, never answered.
        let url: HttpUrl = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let error = get(&url, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(error, HttpError::Timeout { .. }), "{error}");
        drop(listener);
    }
}

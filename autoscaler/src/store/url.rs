//! `[database] connection`, parsed as oslo.db (through SQLAlchemy) reads it.
//!
//! Forms:
//! - `sqlite:///relative/path` and `sqlite:////absolute/path`: three slashes, then the file
//!   (a relative one is relative to the working directory, as SQLAlchemy has it);
//! - `mysql+pymysql://user:password@host[:port]/database[?charset=utf8]`, also `mysql://`,
//!   `mysql+mysqldb://` and the `mariadb` spellings: the Python driver named after `+`
//!   does not matter here, the server speaks the same protocol. User and password are
//!   percent-decoded (`%40` for `@`), the host may be `[ipv6]`, the port is 3306 unless
//!   given. Query: `charset` (utf8, utf8mb3 or utf8mb4: the connection always uses
//!   utf8mb4, a superset), `unix_socket` (a socket path instead of TCP), `plugin`
//!   (SQLAlchemy plugins such as DevStack's `dbcounter`: accepted and ignored). Anything
//!   else, TLS options included, is refused by name rather than silently dropped.
//!
//! Pure: no I/O. [`fmt::Display`] and [`fmt::Debug`] never show the password, so the
//! value can be logged.

use std::{fmt, path::PathBuf, str::FromStr};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// MySQL's registered port.
pub const MYSQL_PORT: u16 = 3306;

/// A parsed `[database] connection`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file, created on first use.
    Sqlite { path: PathBuf },
    /// A MySQL or MariaDB server.
    MySql(MySqlUrl),
}

/// The server form. `password` is never shown by `Display` or `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct MySqlUrl {
    /// The scheme as written (`mysql+pymysql`), kept for display.
    pub scheme: String,
    pub username: String,
    pub password: Option<String>,
    /// Empty when `unix_socket` is given.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub unix_socket: Option<PathBuf>,
}

/// Why a `connection` value is not a database URL; never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("expected a URL such as sqlite:////var/lib/autoscaler/autoscaler.sqlite or mysql+pymysql://user:password@host/autoscaler")]
    NotAUrl,
    #[error("unsupported scheme {0:?} (expected sqlite, mysql, mysql+pymysql, mysql+mysqldb, mariadb or mariadb+pymysql)")]
    Scheme(String),
    #[error("an SQLite URL needs a file: sqlite:///relative/path or sqlite:////absolute/path (an in-memory database would forget everything at exit)")]
    SqliteWithoutFile,
    #[error(
        "an SQLite URL takes no host (write sqlite:///relative/path or sqlite:////absolute/path)"
    )]
    SqliteHost,
    #[error("the URL names no database (mysql+pymysql://user:password@host/autoscaler)")]
    NoDatabase,
    #[error("the URL names no host (or a unix_socket)")]
    NoHost,
    #[error("bad port {0:?}")]
    Port(String),
    #[error("bad percent-encoding in the {0}")]
    Encoding(&'static str),
    #[error("unsupported charset {0:?} (expected utf8, utf8mb3 or utf8mb4)")]
    Charset(String),
    #[error("unsupported query parameter {0:?} (expected charset, unix_socket or plugin; TLS to the database is not supported yet)")]
    Query(String),
}

impl FromStr for DatabaseUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or(UrlError::NotAUrl)?;
        match scheme {
            "sqlite" => parse_sqlite(rest),
            "mysql" | "mysql+pymysql" | "mysql+mysqldb" | "mariadb" | "mariadb+pymysql" => {
                parse_mysql(scheme, rest).map(DatabaseUrl::MySql)
            }
            _ => Err(UrlError::Scheme(scheme.to_owned())),
        }
    }
}

/// `rest` is what follows `sqlite://`: `/relative` or `//absolute`, SQLAlchemy's rule.
fn parse_sqlite(rest: &str) -> Result<DatabaseUrl, UrlError> {
    let (location, query) = split_query(rest);
    if let Some((key, _)) = query_pairs(query).next() {
        return Err(UrlError::Query(key));
    }
    let Some(file) = location.strip_prefix('/') else {
        return Err(if location.is_empty() {
            UrlError::SqliteWithoutFile
        } else {
            UrlError::SqliteHost
        });
    };
    let file = decode(file, "path")?;
    if file.is_empty() || file == ":memory:" {
        return Err(UrlError::SqliteWithoutFile);
    }
    Ok(DatabaseUrl::Sqlite {
        path: PathBuf::from(file),
    })
}

fn parse_mysql(scheme: &str, rest: &str) -> Result<MySqlUrl, UrlError> {
    let (location, query) = split_query(rest);
    // The last `@` ends the user info, so a raw `/` or `@` in a password still parses
    // (percent-encoding them is the portable spelling).
    let host_start = location.rfind('@').map_or(0, |at| at + 1);
    let slash = location[host_start..]
        .find('/')
        .map(|i| host_start + i)
        .ok_or(UrlError::NoDatabase)?;
    let (netloc, path) = location.split_at(slash);
    let database = decode(&path[1..], "database name")?;
    if database.is_empty() {
        return Err(UrlError::NoDatabase);
    }
    let (userinfo, hostport) = match netloc.rfind('@') {
        Some(at) => (Some(&netloc[..at]), &netloc[at + 1..]),
        None => (None, netloc),
    };
    let (username, password) = match userinfo {
        None => (String::new(), None),
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (decode(user, "user name")?, Some(decode(pass, "password")?)),
            None => (decode(info, "user name")?, None),
        },
    };
    let (host, port) = split_host_port(hostport)?;
    let mut url = MySqlUrl {
        scheme: scheme.to_owned(),
        username,
        password,
        host,
        port,
        database,
        unix_socket: None,
    };
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "charset" => {
                if !matches!(value.as_str(), "utf8" | "utf8mb3" | "utf8mb4") {
                    return Err(UrlError::Charset(value));
                }
            }
            "unix_socket" => url.unix_socket = Some(PathBuf::from(value)),
            "plugin" => {}
            _ => return Err(UrlError::Query(key)),
        }
    }
    if url.host.is_empty() && url.unix_socket.is_none() {
        return Err(UrlError::NoHost);
    }
    Ok(url)
}

fn split_query(rest: &str) -> (&str, &str) {
    rest.split_once('?').unwrap_or((rest, ""))
}

/// `key=value` pairs, `+` and percent-escapes decoded; a pair that does not decode keeps
/// its raw text (it is then refused by name).
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let d = |s: &str| {
            let s = s.replace('+', " ");
            percent_decode_str(&s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .unwrap_or(s)
        };
        (d(k), d(v))
    })
}

fn split_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| UrlError::Port(hostport.to_owned()))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(UrlError::Port(after.to_owned())),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None => MYSQL_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| UrlError::Port(p.to_owned()))?,
    };
    Ok((decode(host, "host")?, port))
}

fn decode(text: &str, what: &'static str) -> Result<String, UrlError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| UrlError::Encoding(what))
}

/// What sqlx must not see raw in a path or a user name: URL delimiters and `%` itself.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b']')
    .add(b'&')
    .add(b'=')
    .add(b'+');
/// The same for a path, whose slashes stay.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>');

impl DatabaseUrl {
    /// The default, `sqlite:///<state_path>/autoscaler.sqlite`.
    pub fn default_for(state_path: &std::path::Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite {
            path: state_path.join("autoscaler.sqlite"),
        }
    }

    /// The URL sqlx's `Any` driver takes. It holds the password: never log it.
    ///
    /// SQLite: `mode=rwc` creates the file. MySQL: `charset=utf8mb4` (a superset of what
    /// oslo's `charset=utf8` asks for), TLS off (this build has no TLS for the database),
    /// and sqlx's default session `time_zone` `+00:00`, which the lease arithmetic
    /// (`UNIX_TIMESTAMP(NOW(6))`) relies on.
    pub fn sqlx_url(&self) -> String {
        match self {
            DatabaseUrl::Sqlite { path } => format!(
                "sqlite://{}?mode=rwc",
                utf8_percent_encode(&path.to_string_lossy(), PATH)
            ),
            DatabaseUrl::MySql(m) => {
                let enc = |s: &str| utf8_percent_encode(s, COMPONENT).to_string();
                let mut url = String::from("mysql://");
                if !m.username.is_empty() || m.password.is_some() {
                    url += &enc(&m.username);
                    if let Some(p) = &m.password {
                        url += ":";
                        url += &enc(p);
                    }
                    url += "@";
                }
                let host = match (&m.unix_socket, m.host.contains(':')) {
                    // sqlx wants some host even with a socket; it is not used then.
                    (Some(_), _) if m.host.is_empty() => "localhost".to_owned(),
                    (_, true) => format!("[{}]", m.host),
                    (_, false) => enc(&m.host),
                };
                url += &format!("{host}:{}/{}", m.port, enc(&m.database));
                url += "?ssl-mode=DISABLED&charset=utf8mb4";
                if let Some(socket) = &m.unix_socket {
                    url += "&socket=";
                    url += &enc(&socket.to_string_lossy());
                }
                url
            }
        }
    }

    /// Which database speaks here, for the few SQL spellings that differ.
    pub fn dialect(&self) -> Dialect {
        match self {
            DatabaseUrl::Sqlite { .. } => Dialect::Sqlite,
            DatabaseUrl::MySql(_) => Dialect::MySql,
        }
    }
}

/// The SQL dialect of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    /// MySQL and MariaDB.
    MySql,
}

impl fmt::Display for DatabaseUrl {
    /// The URL without its password, for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Four slashes for an absolute path, three for a relative one.
            DatabaseUrl::Sqlite { path } => write!(
                f,
                "sqlite:///{}",
                utf8_percent_encode(&path.to_string_lossy(), PATH)
            ),
            DatabaseUrl::MySql(m) => {
                let enc = |s: &str| utf8_percent_encode(s, COMPONENT).to_string();
                write!(f, "{}://", m.scheme)?;
                if !m.username.is_empty() || m.password.is_some() {
                    write!(f, "{}", enc(&m.username))?;
                    if m.password.is_some() {
                        f.write_str(":***")?;
                    }
                    f.write_str("@")?;
                }
                if m.host.contains(':') {
                    write!(f, "[{}]", m.host)?;
                } else {
                    write!(f, "{}", enc(&m.host))?;
                }
                if m.port != MYSQL_PORT {
                    write!(f, ":{}", m.port)?;
                }
                write!(f, "/{}", enc(&m.database))?;
                if let Some(socket) = &m.unix_socket {
                    write!(f, "?unix_socket={}", enc(&socket.to_string_lossy()))?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    // The Display form: a `{:?}` in a log line cannot leak the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl fmt::Debug for MySqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MySqlUrl({})", DatabaseUrl::MySql(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(text: &str) -> MySqlUrl {
        match text.parse::<DatabaseUrl>().unwrap() {
            DatabaseUrl::MySql(m) => m,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn sqlite_three_slashes_relative_four_absolute() {
        assert_eq!(
            "sqlite:///autoscaler.sqlite".parse(),
            Ok(DatabaseUrl::Sqlite {
                path: "autoscaler.sqlite".into()
            })
        );
        assert_eq!(
            "sqlite:////var/lib/autoscaler/autoscaler.sqlite".parse(),
            Ok(DatabaseUrl::Sqlite {
                path: "/var/lib/autoscaler/autoscaler.sqlite".into()
            })
        );
        let spaced: DatabaseUrl = "sqlite:////tmp/a%20b/x.db".parse().unwrap();
        assert_eq!(spaced.to_string(), "sqlite:////tmp/a%20b/x.db");
        assert_eq!(spaced.sqlx_url(), "sqlite:///tmp/a%20b/x.db?mode=rwc");
    }

    #[test]
    fn sqlite_refuses_memory_hosts_and_options() {
        for (text, want) in [
            ("sqlite://", UrlError::SqliteWithoutFile),
            ("sqlite:///", UrlError::SqliteWithoutFile),
            ("sqlite:///:memory:", UrlError::SqliteWithoutFile),
            ("sqlite://host/x.db", UrlError::SqliteHost),
            (
                "sqlite:///x.db?timeout=5",
                UrlError::Query("timeout".into()),
            ),
        ] {
            assert_eq!(text.parse::<DatabaseUrl>(), Err(want), "{text}");
        }
    }

    #[test]
    fn mysql_as_devstack_writes_it() {
        let m =
            mysql("mysql+pymysql://root:secret@10.0.0.5/autoscaler?charset=utf8&plugin=dbcounter");
        assert_eq!(
            (m.username.as_str(), m.password.as_deref()),
            ("root", Some("secret"))
        );
        assert_eq!((m.host.as_str(), m.port), ("10.0.0.5", 3306));
        assert_eq!(m.database, "autoscaler");
        let url = DatabaseUrl::MySql(m);
        assert_eq!(
            url.to_string(),
            "mysql+pymysql://root:***@10.0.0.5/autoscaler"
        );
        assert_eq!(
            url.sqlx_url(),
            "mysql://root:secret@10.0.0.5:3306/autoscaler?ssl-mode=DISABLED&charset=utf8mb4"
        );
    }

    #[test]
    fn mysql_credentials_are_percent_decoded_and_re_encoded() {
        let m = mysql("mysql://us%40er:p%40ss%3Aw%2Fd@db.example:3307/as");
        assert_eq!(m.username, "us@er");
        assert_eq!(m.password.as_deref(), Some("p@ss:w/d"));
        assert_eq!(m.port, 3307);
        let url = DatabaseUrl::MySql(m);
        assert_eq!(
            url.sqlx_url(),
            "mysql://us%40er:p%40ss%3Aw%2Fd@db.example:3307/as?ssl-mode=DISABLED&charset=utf8mb4"
        );
        // A raw `@` in the password: the last `@` ends the user info.
        let raw = mysql("mysql://u:p@ss@h/db");
        assert_eq!(
            (raw.password.as_deref(), raw.host.as_str()),
            (Some("p@ss"), "h")
        );
    }

    #[test]
    fn mysql_ipv6_socket_and_no_password() {
        let m = mysql("mysql://root@[::1]:3306/a");
        assert_eq!((m.host.as_str(), m.password.as_deref()), ("::1", None));
        assert_eq!(DatabaseUrl::MySql(m).to_string(), "mysql://root@[::1]/a");
        let s = mysql("mysql+pymysql://u:pw@/a?unix_socket=/run/mysqld/mysqld.sock");
        assert_eq!(s.unix_socket, Some("/run/mysqld/mysqld.sock".into()));
        assert!(DatabaseUrl::MySql(s)
            .sqlx_url()
            .ends_with("&socket=%2Frun%2Fmysqld%2Fmysqld.sock"));
    }

    #[test]
    fn mysql_errors_say_what_is_wrong() {
        for (text, want) in [
            ("postgresql://u@h/db", UrlError::Scheme("postgresql".into())),
            ("mysql://u:pw@h", UrlError::NoDatabase),
            ("mysql://u:pw@h/", UrlError::NoDatabase),
            ("mysql://u:pw@/db", UrlError::NoHost),
            ("mysql://h:0/db", UrlError::Port("0".into())),
            ("mysql://h:x/db", UrlError::Port("x".into())),
            (
                "mysql://h/db?charset=latin1",
                UrlError::Charset("latin1".into()),
            ),
            (
                "mysql://h/db?ssl_ca=/ca.pem",
                UrlError::Query("ssl_ca".into()),
            ),
            ("no-scheme", UrlError::NotAUrl),
        ] {
            assert_eq!(text.parse::<DatabaseUrl>(), Err(want), "{text}");
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let url: DatabaseUrl = "mysql+pymysql://u:hunter2@h/db".parse().unwrap();
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        let DatabaseUrl::MySql(m) = url else {
            unreachable!()
        };
        assert!(!format!("{m:?}").contains("hunter2"));
        // Errors never quote the input.
        let err = "mysql://u:hunter2@h:bad/db"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn default_is_under_state_path() {
        let url = DatabaseUrl::default_for(std::path::Path::new("/var/lib/autoscaler"));
        assert_eq!(
            url.to_string(),
            "sqlite:////var/lib/autoscaler/autoscaler.sqlite"
        );
        assert_eq!(url.dialect(), Dialect::Sqlite);
    }
}

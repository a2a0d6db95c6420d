//! The jkstatus client: mod_jk's status workers over HTTP, to read in-flight counts
//! (`?mime=prop`, from the read-only worker any local client may read), and, through the
//! read-write worker with the agent's Basic login when the image gives one (issue 17), set
//! a member's activation in the running mod_jk and point a spare worker at a new member
//! (host, port, route), which adds it with no reload.

use std::{collections::BTreeMap, path::Path, time::Duration};

use base64::Engine as _;

use autoscaler_messaging::{MemberState, PoolMember};

use super::{first_lines, workers::is_worker_name, ModJkError, COMMAND_TIMEOUT};
use crate::http::{self, HttpUrl};

/// mod_jk's status workers.
#[derive(Debug, Clone)]
pub(crate) struct JkStatus {
    /// `http://<host>:<port>/jkmanager/`, as the image passes it: read-only in the
    /// images of this repository.
    url: HttpUrl,
    /// The read-write worker and the agent's login to it; without it, updates go to `url`.
    admin: Option<(HttpUrl, Login)>,
    balancer: String,
}

/// The agent's Basic login to the read-write status worker, from a `USER:PASSWORD` file
/// the image made. Never printed: `Debug` hides it.
#[derive(Clone)]
pub(crate) struct Login {
    /// The `Authorization` header's value.
    authorization: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Login(hidden)")
    }
}

impl Login {
    /// Reads `path`: one line `USER:PASSWORD` (the user without `:`, neither empty). The
    /// error never quotes the file.
    pub(crate) fn read(path: &Path) -> Result<Login, ModJkError> {
        let error = |problem: String| ModJkError::File {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        Login::parse(text.trim_end_matches(['\r', '\n']))
            .ok_or_else(|| error("expected one line USER:PASSWORD".into()))
    }

    fn parse(line: &str) -> Option<Login> {
        let (user, password) = line.split_once(':')?;
        let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control());
        (plain(user) && plain(password)).then(|| Login {
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(line)
            ),
        })
    }
}

impl JkStatus {
    pub(crate) fn new(url: HttpUrl, balancer: impl Into<String>) -> JkStatus {
        JkStatus {
            url,
            admin: None,
            balancer: balancer.into(),
        }
    }

    /// Updates go to the read-write worker at `url`, with `login`.
    pub(crate) fn with_admin(mut self, url: HttpUrl, login: Login) -> JkStatus {
        self.admin = Some((url, login));
        self
    }

    /// The properties page (`?mime=prop`), also the splitter's liveness check.
    pub(crate) fn properties_url(&self) -> HttpUrl {
        self.url.with_query("mime=prop")
    }

    /// The properties text, within `timeout`.
    pub(crate) async fn properties(&self, timeout: Duration) -> Result<String, ModJkError> {
        let response = http::get(&self.properties_url(), timeout)
            .await
            .map_err(|e| ModJkError::JkStatus(e.to_string()))?;
        if response.status != 200 {
            return Err(ModJkError::JkStatus(format!(
                "?mime=prop answered {}",
                response.status
            )));
        }
        Ok(response.body)
    }

    /// In-flight requests per member (`worker.<name>.busy`, under the worker's `route`
    /// when it has one: a spare holding a member is routed by the member's name), within
    /// `timeout`.
    pub(crate) async fn busy(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, u32>, ModJkError> {
        let text = self.properties(timeout).await?;
        Ok(busy_by_route(&text))
    }

    /// Points the free spare worker `spare` at `member` (host, port, and the member's
    /// name as its route, so the request log names it), then sets its activation, and
    /// reads all of it back. mod_jk keeps the change in its shared memory, for every
    /// child, until the next reload; the caller writes the file to say the same.
    pub(crate) async fn join(&self, spare: &str, member: &PoolMember) -> Result<(), ModJkError> {
        if !is_worker_name(spare) || !is_worker_name(&member.name) {
            return Err(ModJkError::JkStatus(format!(
                "{spare:?} or {:?} is not a worker name",
                member.name
            )));
        }
        let port = member.port.to_string();
        let args = format!(
            "vahst={}&vaprt={port}&vwn={}",
            url_safe(&member.host)?,
            member.name
        );
        self.update(spare, &args).await?;
        let text = self.properties(COMMAND_TIMEOUT).await?;
        let value = |property| {
            worker_values(&text, property)
                .find(|(w, _)| *w == spare)
                .map(|(_, v)| v)
        };
        let now = (value("host"), value("port"), value("route"));
        if now
            != (
                Some(member.host.as_str()),
                Some(&*port),
                Some(&*member.name),
            )
        {
            return Err(ModJkError::JkStatus(format!(
                "{spare} reads {now:?} after pointing it at {} on {}:{port}",
                member.name, member.host
            )));
        }
        self.set_activation(spare, member.state).await
    }

    /// One `cmd=update` of member `worker` of the balancer with `args`.
    async fn update(&self, worker: &str, args: &str) -> Result<(), ModJkError> {
        let (base, login) = match &self.admin {
            Some((url, login)) => (url, Some(login.authorization.as_str())),
            None => (&self.url, None),
        };
        let url = base.with_query(&format!(
            "cmd=update&mime=txt&w={}&sw={worker}&{args}",
            self.balancer
        ));
        let response = http::get_as(&url, COMMAND_TIMEOUT, login)
            .await
            .map_err(|e| ModJkError::JkStatus(e.to_string()))?;
        let result = update_result(&response.body);
        if response.status != 200 || result.is_err() {
            return Err(ModJkError::JkStatus(format!(
                "updating {worker} with {args}: HTTP {}: {}",
                response.status,
                result
                    .err()
                    .unwrap_or_else(|| first_lines(&response.body, 1))
            )));
        }
        Ok(())
    }

    /// Sets `member`'s activation in the running mod_jk (all children: it lives in the
    /// shared memory), then reads it back. Not persistent: the next graceful reload
    /// takes the file's.
    pub(crate) async fn set_activation(
        &self,
        member: &str,
        state: MemberState,
    ) -> Result<(), ModJkError> {
        if !is_worker_name(member) {
            return Err(ModJkError::JkStatus(format!(
                "{member:?} is not a worker name"
            )));
        }
        let (code, shown) = match state {
            MemberState::Active => ("A", "ACT"),
            MemberState::Draining => ("D", "DIS"),
        };
        self.update(member, &format!("vwa={code}")).await?;
        let text = self.properties(COMMAND_TIMEOUT).await?;
        let now = worker_values(&text, "activation")
            .find(|(w, _)| *w == member)
            .map(|(_, value)| value.to_owned());
        match now {
            Some(now) if now == shown => Ok(()),
            Some(now) => Err(ModJkError::JkStatus(format!(
                "{member} is {now} after setting it to {code}"
            ))),
            None => Err(ModJkError::JkStatus(format!(
                "{member} is not in the properties after setting it"
            ))),
        }
    }
}

/// A host as a query value: an IP address (the pool's hosts are validated as such) has
/// nothing to escape; anything else is refused.
fn url_safe(host: &str) -> Result<&str, ModJkError> {
    if !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_hexdigit() || ".:".contains(c))
    {
        Ok(host)
    } else {
        Err(ModJkError::JkStatus(format!(
            "host {host:?} is not an IP address"
        )))
    }
}

/// `worker.<name>.busy` of a `?mime=prop` page, keyed by the worker's `route` where it
/// has one.
fn busy_by_route(text: &str) -> BTreeMap<String, u32> {
    let routes: BTreeMap<&str, &str> = worker_values(text, "route").collect();
    worker_values(text, "busy")
        .filter_map(|(w, v)| {
            let name = routes.get(w).copied().unwrap_or(w);
            Some((name.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Whether a `mime=txt` update answer says `type=OK`; the error's message otherwise.
fn update_result(body: &str) -> Result<(), String> {
    let line = body
        .lines()
        .find(|l| l.trim_start().starts_with("Result:"))
        .ok_or_else(|| format!("no Result line in {:?}", first_lines(body, 1)))?;
    if line.contains("type=OK") {
        Ok(())
    } else {
        Err(line.trim().to_owned())
    }
}

/// `(worker, value)` of every `worker.<worker>.<property>=<value>` line of a
/// `?mime=prop` page, for workers whose name has no dot (not `worker.lb.map.1.x`).
pub(crate) fn worker_values<'a>(
    text: &'a str,
    property: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    text.lines().filter_map(move |line| {
        let (key, value) = line.split_once('=')?;
        let (worker, prop) = key.trim().strip_prefix("worker.")?.split_once('.')?;
        (prop == property).then_some((worker, value.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_counts_come_from_the_properties_page() {
        let prop = "\
worker.list=loadbalancer
worker.loadbalancer.type=lb
worker.loadbalancer.busy=3
worker.loadbalancer.max_busy=9
worker.loadbalancer.balance_workers=placeholder
worker.loadbalancer.balance_workers=shop_web_1
worker.placeholder.busy=0
worker.placeholder.activation=STP
worker.shop_web_1.busy=3
worker.shop_web_1.busy_limit=0
worker.shop_web_1.activation=DIS
worker.loadbalancer.map.1.busy=x
";
        let busy: Vec<_> = worker_values(prop, "busy").collect();
        assert_eq!(
            busy,
            [
                ("loadbalancer", "3"),
                ("placeholder", "0"),
                ("shop_web_1", "3")
            ]
        );
        let activation: Vec<_> = worker_values(prop, "activation").collect();
        assert_eq!(activation, [("placeholder", "STP"), ("shop_web_1", "DIS")]);
        // A spare holding a member is counted under the member's name (its route).
        let spared = format!(
            "{prop}worker._spare_1.busy=2\nworker._spare_1.route=shop_web_2\n\
             worker._spare_2.busy=0\nworker._spare_2.route=_spare_2\n"
        );
        let busy: Vec<_> = busy_by_route(&spared).into_iter().collect();
        assert_eq!(
            busy,
            [
                ("_spare_2".into(), 0),
                ("loadbalancer".into(), 3),
                ("placeholder".into(), 0),
                ("shop_web_1".into(), 3),
                ("shop_web_2".into(), 2),
            ]
        );
        assert_eq!(url_safe("127.0.1.11").unwrap(), "127.0.1.11");
        assert_eq!(url_safe("::1").unwrap(), "::1");
        assert!(url_safe("a&b=c").is_err() && url_safe("").is_err());
    }

    #[test]
    fn the_login_is_read_from_its_file_and_never_shown() {
        let login = Login::parse("autoscaler-agent:s3cret").unwrap();
        // RFC 7617: base64 of USER:PASSWORD.
        assert_eq!(
            login.authorization,
            "Basic YXV0b3NjYWxlci1hZ2VudDpzM2NyZXQ="
        );
        assert_eq!(format!("{login:?}"), "Login(hidden)");
        for bad in ["", "user", ":pw", "user:", "us\ter:pw"] {
            assert!(Login::parse(bad).is_none(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jkadmin.credentials");
        std::fs::write(&path, "u:p\n").unwrap();
        assert_eq!(Login::read(&path).unwrap().authorization, "Basic dTpw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let error = Login::read(&path).unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
        assert!(Login::read(&dir.path().join("none")).is_err());
    }

    #[test]
    fn update_answers_are_read() {
        assert_eq!(
            update_result("Result: type=OK message=\"Action finished\"\n"),
            Ok(())
        );
        assert_eq!(
            update_result("Result: type=ERROR message=\"could not find sub worker\"\n"),
            Err("Result: type=ERROR message=\"could not find sub worker\"".into())
        );
        assert!(update_result("<html>").is_err());
    }
}

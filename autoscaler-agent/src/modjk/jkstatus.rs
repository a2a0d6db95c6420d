//! The jkstatus client: mod_jk's status workers over HTTP, to read in-flight counts
//! (`?mime=prop`, from the read-only worker any local client may read) and set a member's
//! activation in the running mod_jk (through the read-write worker, with the agent's
//! Basic login when the image gives one: issue 17).

use std::{collections::BTreeMap, path::Path, time::Duration};

use base64::Engine as _;

use autoscaler_messaging::MemberState;

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

    /// In-flight requests per worker (`worker.<name>.busy`), within `timeout`.
    pub(crate) async fn busy(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, u32>, ModJkError> {
        let text = self.properties(timeout).await?;
        Ok(worker_values(&text, "busy")
            .filter_map(|(w, v)| Some((w.to_owned(), v.parse().ok()?)))
            .collect())
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
        let (base, login) = match &self.admin {
            Some((url, login)) => (url, Some(login.authorization.as_str())),
            None => (&self.url, None),
        };
        let url = base.with_query(&format!(
            "cmd=update&mime=txt&w={}&sw={member}&vwa={code}",
            self.balancer
        ));
        let response = http::get_as(&url, COMMAND_TIMEOUT, login)
            .await
            .map_err(|e| ModJkError::JkStatus(e.to_string()))?;
        let result = update_result(&response.body);
        if response.status != 200 || result.is_err() {
            return Err(ModJkError::JkStatus(format!(
                "setting {member} to {code}: HTTP {}: {}",
                response.status,
                result
                    .err()
                    .unwrap_or_else(|| first_lines(&response.body, 1))
            )));
        }
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

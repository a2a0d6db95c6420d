//! The jkstatus client: mod_jk's status worker over HTTP, to read in-flight counts
//! (`?mime=prop`) and set a member's activation in the running mod_jk.

use std::{collections::BTreeMap, time::Duration};

use autoscaler_messaging::MemberState;

use super::{first_lines, workers::is_worker_name, ModJkError, COMMAND_TIMEOUT};
use crate::http::{self, HttpUrl};

/// mod_jk's status worker.
#[derive(Debug, Clone)]
pub(crate) struct JkStatus {
    /// `http://<host>:<port>/jkmanager/`, as the image passes it.
    url: HttpUrl,
    balancer: String,
}

impl JkStatus {
    pub(crate) fn new(url: HttpUrl, balancer: impl Into<String>) -> JkStatus {
        JkStatus {
            url,
            balancer: balancer.into(),
        }
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
        let url = self.url.with_query(&format!(
            "cmd=update&mime=txt&w={}&sw={member}&vwa={code}",
            self.balancer
        ));
        let response = http::get(&url, COMMAND_TIMEOUT)
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

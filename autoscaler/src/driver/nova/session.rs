//! The driver's link to OpenStack: the openstack crate's session built from `[nova]`
//! ([`settings`] checks `[nova]`, [`open`] builds: a clouds.yaml cloud, Keystone v3
//! password, keystoneauth's `admin_token`, or `none`), the crate's requests run through it
//! ([`Compute::crate_call`]) and the hand-written compute requests the crate cannot make
//! ([`Compute::call`]), both with the timeout, the retries and the error mapping the
//! driver contract asks for.
//!
//! # Retries
//!
//! A request that could not connect or timed out is tried again up to `connect_retries`
//! times, one answered 5xx up to `status_code_retries` times, with backoff (0.5 s,
//! doubling, at most 8 s), but only when repeating it cannot do anything twice
//! ([`Retry::Idempotent`]: GET and DELETE). A create is sent once ([`Retry::Never`]): Nova
//! may have created the server even when the answer was lost, and the driver then finds
//! it by its name rather than boot a second one (see `NovaDriver::boot`). A 4xx is never
//! repeated here; the caller's error says whether it may succeed later
//! ([`DriverError::is_retryable`]).
//!
//! # admin_token and none
//!
//! keystoneauth's `admin_token` plugin sends a fixed token as `X-Auth-Token` to a fixed
//! endpoint, with no Keystone. osauth has no such plugin (its `Token` exchanges a token
//! with Keystone), so [`FixedEndpoint`] implements osauth's `AuthType` for it (Nova's
//! noauth2 takes `user:project` as that token), and for `none` (no token). Having no
//! catalog, it knows the compute endpoint only: the image and network services are
//! `[nova] image_endpoint_override` and `network_endpoint_override` (session endpoint
//! overrides, which osauth asks before the auth), and without them a request to those
//! services fails naming the option, rather than going to Nova's URL as osauth's
//! `NoAuth` would send it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use async_trait::async_trait;
use osauth::{
    services::{ServiceType, COMPUTE, IMAGE, NETWORK},
    ApiVersion, AuthType, EndpointFilters, ErrorKind, Session,
};
use reqwest::{
    header::{HeaderValue, CONTENT_TYPE},
    Client, Method, RequestBuilder, Url,
};
use tracing::debug;

use crate::{
    conf::{nova::AuthType as NovaAuth, NovaOpts, Secret},
    driver::DriverError,
};

/// First wait between two tries; doubles each time up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// keystoneauth's `admin_token` (a fixed token to a fixed endpoint) and `none` (no token):
/// no catalog, the compute endpoint only.
#[derive(Debug, Clone)]
pub struct FixedEndpoint {
    /// The compute API.
    endpoint: Url,
    /// `None` for `auth_type = none`.
    token: Option<Secret>,
    /// `admin_token` or `none`, for errors.
    auth_type: &'static str,
}

#[async_trait]
impl AuthType for FixedEndpoint {
    async fn authenticate(
        &self,
        _client: &Client,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, osauth::Error> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
            osauth::Error::new(
                ErrorKind::InvalidInput,
                "[nova] token holds a character not allowed in an HTTP header",
            )
        })?;
        value.set_sensitive(true);
        Ok(request.header("X-Auth-Token", value))
    }

    async fn get_endpoint(
        &self,
        _client: &Client,
        service_type: &str,
        _filters: &EndpointFilters,
    ) -> Result<Url, osauth::Error> {
        if service_type == COMPUTE.catalog_type() {
            return Ok(self.endpoint.clone());
        }
        Err(osauth::Error::new(
            ErrorKind::EndpointNotFound,
            format!(
                "auth_type = {} has no catalog to find the {service_type} service in: set \
                 [nova] {service_type}_endpoint_override",
                self.auth_type
            ),
        ))
    }

    async fn refresh(&self, _client: &Client) -> Result<(), osauth::Error> {
        Ok(())
    }
}

fn invalid(option: &'static str, value: &str, reason: impl Into<String>) -> DriverError {
    DriverError::InvalidConfig {
        section: "nova",
        option,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn required<'a>(
    value: &'a Option<String>,
    option: &'static str,
    auth: &str,
) -> Result<&'a str, DriverError> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(option, "", format!("auth_type = {auth} needs it")))
}

fn url(option: &'static str, text: &str) -> Result<Url, DriverError> {
    let parsed = Url::parse(text).map_err(|e| invalid(option, text, format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(invalid(
            option,
            text,
            format!("expected an http or https URL, not {other}"),
        )),
    }
}

/// How to authenticate, checked (every option a plugin needs is there and well formed).
#[derive(Debug, Clone)]
pub enum Credentials {
    Cloud(String),
    Password {
        auth_url: String,
        username: String,
        password: Secret,
        user_domain_name: String,
        project_name: String,
        project_domain_name: String,
    },
    AdminToken {
        endpoint: Url,
        token: Secret,
    },
    None {
        endpoint: Url,
    },
}

impl Credentials {
    /// Whether a catalog gives the image and network endpoints.
    fn has_catalog(&self) -> bool {
        matches!(self, Credentials::Cloud(_) | Credentials::Password { .. })
    }
}

/// `[nova]`, checked, for [`open`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub credentials: Credentials,
    pub region_name: Option<String>,
    pub interface: osauth::InterfaceType,
    pub endpoint_override: Option<Url>,
    /// The image service (Glance), instead of the catalog's.
    pub image_endpoint_override: Option<Url>,
    /// The network service (Neutron), instead of the catalog's.
    pub network_endpoint_override: Option<Url>,
    /// `[nova] cafile`: CA certificates trusted besides the built-in roots.
    pub cafile: Option<PathBuf>,
}

/// Checks `[nova]` without sending anything: the errors name the option that is missing
/// or wrong.
pub fn settings(opts: &NovaOpts) -> Result<Settings, DriverError> {
    let endpoint_override = opts
        .endpoint_override
        .as_deref()
        .map(|e| url("endpoint_override", e))
        .transpose()?;
    let image_endpoint_override = opts
        .image_endpoint_override
        .as_deref()
        .map(|e| url("image_endpoint_override", e))
        .transpose()?;
    let network_endpoint_override = opts
        .network_endpoint_override
        .as_deref()
        .map(|e| url("network_endpoint_override", e))
        .transpose()?;
    let fixed_endpoint = |auth: &str| -> Result<Url, DriverError> {
        match &endpoint_override {
            Some(e) => Ok(e.clone()),
            None => url("endpoint", required(&opts.endpoint, "endpoint", auth)?),
        }
    };
    let credentials = match (&opts.cloud, opts.auth_type) {
        (Some(cloud), _) => Credentials::Cloud(cloud.clone()),
        (None, NovaAuth::Password) => {
            let auth_url = required(&opts.auth_url, "auth_url", "password")?;
            let _ = url("auth_url", auth_url)?;
            Credentials::Password {
                auth_url: auth_url.to_owned(),
                username: required(&opts.username, "username", "password")?.to_owned(),
                password: opts
                    .password
                    .clone()
                    .filter(|p| !p.expose().is_empty())
                    .ok_or_else(|| invalid("password", "", "auth_type = password needs it"))?,
                user_domain_name: opts.user_domain_name.clone(),
                project_name: required(&opts.project_name, "project_name", "password")?.to_owned(),
                project_domain_name: opts.project_domain_name.clone(),
            }
        }
        (None, NovaAuth::AdminToken) => Credentials::AdminToken {
            endpoint: fixed_endpoint("admin_token")?,
            token: opts
                .token
                .clone()
                .filter(|t| !t.expose().is_empty())
                .ok_or_else(|| invalid("token", "", "auth_type = admin_token needs it"))?,
        },
        (None, NovaAuth::None) => Credentials::None {
            endpoint: fixed_endpoint("none")?,
        },
    };
    // Every boot looks its image up in the image service: without a catalog, say now.
    if !credentials.has_catalog() && image_endpoint_override.is_none() {
        let auth = match credentials {
            Credentials::AdminToken { .. } => "admin_token",
            _ => "none",
        };
        return Err(invalid(
            "image_endpoint_override",
            "",
            format!("auth_type = {auth} needs it (no catalog to find the image service in)"),
        ));
    }
    Ok(Settings {
        credentials,
        region_name: opts.region_name.clone(),
        interface: match opts.interface.as_str() {
            "internal" => osauth::InterfaceType::Internal,
            "admin" => osauth::InterfaceType::Admin,
            _ => osauth::InterfaceType::Public,
        },
        endpoint_override,
        image_endpoint_override,
        network_endpoint_override,
        cafile: opts.cafile.clone(),
    })
}

/// The HTTP client of the session: reqwest's default, also trusting the certificates of
/// `cafile` when it is set (a CA of the deployment's own, such as DevStack's tls-proxy's).
fn http_client(cafile: Option<&Path>) -> Result<Client, DriverError> {
    let Some(path) = cafile else {
        return Ok(Client::new());
    };
    let shown = path.display().to_string();
    let pem = std::fs::read(path)
        .map_err(|e| invalid("cafile", &shown, format!("cannot read it: {e}")))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid("cafile", &shown, format!("not PEM certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(invalid("cafile", &shown, "it holds no PEM certificate"));
    }
    certificates
        .into_iter()
        .fold(Client::builder(), |builder, certificate| {
            builder.add_root_certificate(certificate)
        })
        .build()
        .map_err(|e| invalid("cafile", &shown, e.to_string()))
}

/// The session the settings describe. Nothing is sent yet for a password (Keystone is
/// asked for a token at the first request); a clouds.yaml cloud is read here.
pub async fn open(settings: &Settings) -> Result<Session, DriverError> {
    let session_error = |option: &'static str, value: &str| {
        let value = value.to_owned();
        move |e: osauth::Error| invalid(option, &value, e.to_string())
    };
    let client = || http_client(settings.cafile.as_deref());
    let mut session = match &settings.credentials {
        Credentials::Cloud(cloud) => Session::from_config(cloud)
            .await
            .map_err(session_error("cloud", cloud))?,
        Credentials::Password {
            auth_url,
            username,
            password,
            user_domain_name,
            project_name,
            project_domain_name,
        } => {
            let auth = osauth::identity::Password::new(
                auth_url,
                username.as_str(),
                password.expose(),
                user_domain_name.as_str(),
            )
            .map_err(session_error("auth_url", auth_url))?
            .with_project_scope(
                osauth::common::IdOrName::from_name(project_name.as_str()),
                osauth::common::IdOrName::from_name(project_domain_name.as_str()),
            );
            Session::new_with_client(client()?, auth)
                .await
                .map_err(session_error("auth_url", auth_url))?
        }
        Credentials::AdminToken { endpoint, token } => Session::new_with_client(
            client()?,
            FixedEndpoint {
                endpoint: endpoint.clone(),
                token: Some(token.clone()),
                auth_type: "admin_token",
            },
        )
        .await
        .map_err(session_error("endpoint", endpoint.as_str()))?,
        Credentials::None { endpoint } => Session::new_with_client(
            client()?,
            FixedEndpoint {
                endpoint: endpoint.clone(),
                token: None,
                auth_type: "none",
            },
        )
        .await
        .map_err(session_error("endpoint", endpoint.as_str()))?,
    };
    if let Some(region) = &settings.region_name {
        session.set_region(region.clone());
    }
    session.set_endpoint_interface(settings.interface);
    if let Some(endpoint) = &settings.endpoint_override {
        session.set_endpoint_override(COMPUTE, endpoint.clone());
    }
    if let Some(endpoint) = &settings.image_endpoint_override {
        session.set_endpoint_override(IMAGE, endpoint.clone());
    }
    if let Some(endpoint) = &settings.network_endpoint_override {
        session.set_endpoint_override(NETWORK, endpoint.clone());
    }
    Ok(session)
}

/// Whether a request may be sent again after a lost answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Sending it twice does nothing twice (GET, DELETE).
    Idempotent,
    /// Sent once (a create).
    Never,
}

/// One compute request.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path segments under the compute endpoint, e.g. `["servers", id]`.
    pub path: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    pub version: (u16, u16),
    pub retry: Retry,
}

impl Call {
    pub fn get(path: &[&str]) -> Call {
        Call {
            method: Method::GET,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            version: super::protocol::MICROVERSION,
            retry: Retry::Idempotent,
        }
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Call {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub fn version(mut self, version: (u16, u16)) -> Call {
        self.version = version;
        self
    }

    /// `GET /servers/detail`, as errors and logs name the call.
    pub fn label(&self) -> String {
        let mut label = format!("{} /{}", self.method, self.path.join("/"));
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            label.push('?');
            label.push_str(&q.join("&"));
        }
        label
    }
}

/// A compute answer: its status and body (the caller decides what a 404 means).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T`, or an error naming the call.
    pub fn json<T: serde::de::DeserializeOwned>(&self, call: &Call) -> Result<T, DriverError> {
        serde_json::from_str(&self.body).map_err(|e| DriverError::Api {
            call: call.label(),
            status: self.status,
            message: format!("unreadable answer: {e}"),
        })
    }

    /// The error this answer is, naming the call: over quota or rate limit, or Nova's fault
    /// message with the status.
    pub fn error(&self, call: &Call) -> DriverError {
        let message = super::protocol::error_message(&self.body);
        if super::protocol::is_over_limit(self.status, &message) {
            DriverError::OverLimit {
                call: call.label(),
                status: self.status,
                message,
            }
        } else {
            DriverError::Api {
                call: call.label(),
                status: self.status,
                message,
            }
        }
    }
}

/// The compute API with the `[nova]` timeouts and retries.
#[derive(Debug, Clone)]
pub struct Compute {
    pub session: Session,
    pub timeout: Duration,
    pub connect_retries: u32,
    pub status_code_retries: u32,
}

impl Compute {
    /// Sends `call`, retried as the module doc says; any HTTP answer is `Ok` (a 4xx or
    /// a 5xx after the retries included), for the caller to read.
    pub async fn call(&self, call: &Call) -> Result<Answer, DriverError> {
        let mut failures = 0u32;
        loop {
            let mut request = self
                .session
                .request(COMPUTE, call.method.clone(), &call.path)
                .api_version(ApiVersion(call.version.0, call.version.1))
                .timeout(self.timeout);
            if !call.query.is_empty() {
                request = request.query(&call.query);
            }
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let again = |limit: u32| call.retry == Retry::Idempotent && failures < limit;
            let outcome = match request.send_unchecked().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(body) => Ok(Answer { status, body }),
                        Err(e) => Err(osauth::Error::from(e)),
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(answer) if answer.status >= 500 && again(self.status_code_retries) => {
                    debug!(call = %call.label(), status = answer.status, failures, "server error; trying again");
                }
                Ok(answer) => return Ok(answer),
                Err(e) if is_transport(&e) && again(self.connect_retries) => {
                    debug!(call = %call.label(), error = %e, failures, "no answer; trying again");
                }
                Err(e) => return Err(osauth_error(call.label(), &e)),
            }
            tokio::time::sleep(backoff(failures)).await;
            failures += 1;
        }
    }
}

impl Compute {
    /// The openstack crate over this session (its version discovery is cached in the
    /// session, shared by clones).
    pub fn cloud(&self) -> openstack::Cloud {
        openstack::Cloud::from(self.session.clone())
    }

    /// Runs one operation of the openstack crate (`attempt` starts it afresh for each try)
    /// with the `[nova]` limits the crate does not apply itself: [`CRATE_CALL_REQUESTS`]
    /// times `timeout` for the operation, and, when `retry` allows, the retries of
    /// [`Compute::call`] (no answer: `connect_retries`; a 5xx: `status_code_retries`).
    /// `label` names the call in logs and in the timeout's error.
    pub async fn crate_call<T, F, Fut>(
        &self,
        label: &str,
        retry: Retry,
        attempt: F,
    ) -> Result<T, osauth::Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, osauth::Error>>,
    {
        let patience = self.timeout * CRATE_CALL_REQUESTS;
        let mut failures = 0u32;
        loop {
            let outcome = tokio::time::timeout(patience, attempt())
                .await
                .unwrap_or_else(|_| {
                    Err(osauth::Error::new(
                        ErrorKind::OperationTimedOut,
                        format!("no answer within {} s", patience.as_secs_f64()),
                    ))
                });
            let limit = match &outcome {
                Err(e) if e.kind() == ErrorKind::InternalServerError => self.status_code_retries,
                Err(e) if is_transport(e) => self.connect_retries,
                _ => return outcome,
            };
            if retry == Retry::Never || failures >= limit {
                return outcome;
            }
            if let Err(e) = &outcome {
                debug!(call = label, error = %e, failures, "no good answer; trying again");
            }
            tokio::time::sleep(backoff(failures)).await;
            failures += 1;
        }
    }
}

/// Requests one operation of the openstack crate may make (a look-up by id, then by name,
/// after the service's version discovery): its time limit is this many `[nova] timeout`s.
pub const CRATE_CALL_REQUESTS: u32 = 3;

/// An osauth error of a request that got no HTTP answer: unreachable (retryable) or a
/// failure of the session itself (authentication, catalog: not retryable).
pub fn osauth_error(call: String, e: &osauth::Error) -> DriverError {
    match is_transport(e) {
        true => DriverError::Unreachable {
            call,
            reason: e.to_string(),
        },
        false => DriverError::Cloud {
            call,
            reason: e.to_string(),
        },
    }
}

/// Errors where no answer came: the cloud, or Keystone, could not be reached in time.
fn is_transport(e: &osauth::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ProtocolError | ErrorKind::OperationTimedOut | ErrorKind::InternalServerError
    )
}

/// The wait after `failures` failed tries.
pub fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << failures.min(8))
        .min(BACKOFF_MAX)
}

/// A compute API on a loopback port for tests: the version document at `/v2.1`, and for
/// every other request what `respond` says of its head (request line and headers):
/// `(status, JSON body)`, with `{origin}` in the body replaced by `http://127.0.0.1:PORT`,
/// or `None` to close the connection without an answer. Its endpoint,
/// `http://127.0.0.1:PORT/v2.1`.
#[cfg(test)]
pub(crate) async fn fake_nova(
    respond: impl Fn(&str) -> Option<(u16, String)> + Send + Sync + 'static,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v2.1", listener.local_addr().unwrap());
    let root = base.clone();
    let origin = base.trim_end_matches("/v2.1").to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&request).to_string();
            let answer = if head.starts_with("GET /v2.1 ") || head.starts_with("GET /v2.1/ ") {
                let doc = serde_json::json!({"version": {"id": "v2.1", "status": "CURRENT",
                    "version": "2.93", "min_version": "2.1",
                    "links": [{"rel": "self", "href": format!("{root}/")}]}});
                Some((200, doc.to_string()))
            } else {
                respond(&head)
            };
            let Some((status, body)) = answer else {
                continue; // dropped: no answer at all
            };
            let body = body.replace("{origin}", &origin);
            let text = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(text.as_bytes()).await;
        }
    });
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load_from_str, Config};

    #[test]
    fn backoff_doubles_up_to_eight_seconds() {
        let waits: Vec<u64> = (0..7).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    /// Issue 7: a quota refusal is its own, retryable error; a policy refusal is not.
    #[test]
    fn issue_7_quota_and_rate_limits_are_over_limit_errors() {
        let call = Call {
            method: Method::POST,
            ..Call::get(&["servers"])
        };
        let answer = |status, message: &str| Answer {
            status,
            body: serde_json::json!({"forbidden": {"code": status, "message": message}})
                .to_string(),
        };
        let quota = answer(
            403,
            "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances",
        )
        .error(&call);
        assert!(
            matches!(quota, DriverError::OverLimit { status: 403, .. }),
            "{quota}"
        );
        assert!(quota.is_retryable());
        assert_eq!(
            quota.to_string(),
            "POST /servers: over quota or rate limit (HTTP 403): Quota exceeded for \
             instances: Requested 1, but already used 10 of 10 instances"
        );
        assert!(answer(429, "Too many requests").error(&call).is_retryable());
        let policy = answer(403, "Policy doesn't allow os_compute_api:servers:create").error(&call);
        assert!(
            matches!(policy, DriverError::Api { status: 403, .. }),
            "{policy}"
        );
        assert!(!policy.is_retryable());
        assert!(answer(503, "busy").error(&call).is_retryable());
    }

    /// [`fake_nova`] answering from a list: for every request but the version document,
    /// the next status (`0`: no answer); counts the requests.
    async fn scripted_nova(
        statuses: Vec<u16>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::{atomic::Ordering, Arc, Mutex};
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let statuses = Mutex::new(statuses.into_iter());
        let base = fake_nova(move |_head| {
            seen.fetch_add(1, Ordering::SeqCst);
            match statuses.lock().unwrap().next().unwrap_or(200) {
                0 => None,
                200 => Some((200, r#"{"server": {"id": "x"}}"#.to_owned())),
                code => Some((
                    code,
                    format!(
                        r#"{{"computeFault": {{"code": {code}, "message": "scripted {code}"}}}}"#
                    ),
                )),
            }
        })
        .await;
        (base, count)
    }

    async fn compute_at(endpoint: &str, retries: u32) -> Compute {
        let opts = nova(&format!(
            "[nova]\nauth_type = admin_token\nendpoint = {endpoint}\ntoken = a:b\n\
             image_endpoint_override = {endpoint}\n"
        ));
        Compute {
            session: open(&settings(&opts).unwrap()).await.unwrap(),
            timeout: Duration::from_secs(2),
            connect_retries: retries,
            status_code_retries: retries,
        }
    }

    /// Issue 7: 5xx and lost answers are retried with backoff for GET and DELETE; a create
    /// is sent once.
    #[tokio::test]
    async fn issue_7_server_errors_and_lost_answers_are_retried_but_a_create_is_not() {
        use std::sync::atomic::Ordering;
        let (base, count) = scripted_nova(vec![503, 502, 200]).await;
        let compute = compute_at(&base, 2).await;
        let get = Call::get(&["servers", "x"]);
        let answer = compute.call(&get).await.unwrap();
        assert_eq!((answer.status, count.load(Ordering::SeqCst)), (200, 3));

        let (base, count) = scripted_nova(vec![503, 503, 503, 503]).await;
        let compute = compute_at(&base, 1).await;
        let answer = compute.call(&get).await.unwrap();
        assert_eq!((answer.status, count.load(Ordering::SeqCst)), (503, 2));
        let err = answer.error(&get);
        assert_eq!(err.to_string(), "GET /servers/x: HTTP 503: scripted 503");
        assert!(err.is_retryable());

        let (base, count) = scripted_nova(vec![503, 200]).await;
        let compute = compute_at(&base, 3).await;
        let create = Call {
            method: Method::POST,
            retry: Retry::Never,
            ..Call::get(&["servers"])
        };
        let answer = compute.call(&create).await.unwrap();
        assert_eq!((answer.status, count.load(Ordering::SeqCst)), (503, 1));

        let (base, count) = scripted_nova(vec![0, 0, 0]).await;
        let compute = compute_at(&base, 1).await;
        let err = compute.call(&get).await.unwrap_err();
        assert!(matches!(err, DriverError::Unreachable { .. }), "{err}");
        assert!(err.is_retryable());
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn labels_name_method_path_and_query() {
        let call = Call::get(&["servers", "detail"]).query("tags", "autoscaler");
        assert_eq!(call.label(), "GET /servers/detail?tags=autoscaler");
    }

    fn nova(text: &str) -> NovaOpts {
        load_from_str("a.conf", text).unwrap().config.nova
    }

    #[test]
    fn missing_credentials_name_the_option() {
        for (text, want) in [
            (
                "[nova]\nauth_type = password\n",
                "[nova] auth_url = \"\": auth_type = password needs it",
            ),
            (
                "[nova]\nauth_url = http://k/identity\nusername = u\nproject_name = p\n",
                "[nova] password = \"\": auth_type = password needs it",
            ),
            (
                "[nova]\nauth_type = admin_token\ntoken = a:b\n",
                "[nova] endpoint = \"\": auth_type = admin_token needs it",
            ),
            (
                "[nova]\nauth_type = admin_token\nendpoint = http://127.0.0.1:8774/v2.1\n",
                "[nova] token = \"\": auth_type = admin_token needs it",
            ),
            (
                "[nova]\nauth_type = none\nendpoint = ftp://x/\n",
                "[nova] endpoint = \"ftp://x/\": expected an http or https URL, not ftp",
            ),
        ] {
            let err = settings(&nova(text)).err().unwrap();
            assert_eq!(err.to_string(), want, "{text}");
            assert!(!err.is_retryable());
        }
        assert!(settings(&Config::default().nova).is_err());
    }

    /// A self-signed CA (P-256), made for this test with `openssl req -x509`.
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBjzCCATWgAwIBAgIUT74/T1yx5XHk41H1x/OHbvmr94IwCgYIKoZIzj0EAwIw\n\
HTEbMBkGA1UEAwwSYXV0b3NjYWxlciB0ZXN0IENBMB4XDTI2MTIwMjA1Mzc1MVoX\n\
DTM2MTEyOTA1Mzc1MVowHTEbMBkGA1UEAwwSYXV0b3NjYWxlciB0ZXN0IENBMFkw\n\
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0jms6lbwwH4lGvl3EGFMhJPx3S1AIYb9\n\
JsrQIUBtgxLODOPFW73hTpL0Sb6i4LzfUhqD3egOPKi4N8llEYJ9CqNTMFEwHQYD\n\
VR0OBBYEFIWeNe4Yo7rybU+3bpNuuzaFuSbNMB8GA1UdIwQYMBaAFIWeNe4Yo7ry\n\
bU+3bpNuuzaFuSbNMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg\n\
FliMgYbOMEjCAz1c3yzR+jJd3SCcGMpb6U86JX6oI/MCIQD+C8oCRWRfqpNmLzUt\n\
Z8CvP1KLvpLSAU0NkgYHXeLwiQ==\n\
-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn cafile_is_trusted_and_its_problems_name_it() {
        let dir = std::env::temp_dir().join(format!("autoscaler-cafile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good, empty) = (dir.join("ca.pem"), dir.join("empty.pem"));
        std::fs::write(&good, TEST_CA).unwrap();
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let with_cafile = |path: &Path| {
            nova(&format!(
                "[nova]\nauth_type = none\nendpoint = https://127.0.0.1:1/v2.1\ncafile = {}\n\
                 image_endpoint_override = https://127.0.0.1:1/\n",
                path.display()
            ))
        };
        let opened = open(&settings(&with_cafile(&good)).unwrap()).await;
        assert!(opened.is_ok(), "{:?}", opened.err());
        for (path, reason) in [
            (&empty, "it holds no PEM certificate"),
            (&dir.join("missing.pem"), "cannot read it: No such file"),
        ] {
            let err = open(&settings(&with_cafile(path)).unwrap())
                .await
                .err()
                .unwrap();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("[nova] cafile = \"{}\": {reason}", path.display())),
                "{text}"
            );
            assert!(!err.is_retryable());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_token_session_needs_no_keystone() {
        let opts = nova(
            "[nova]\nauth_type = admin_token\nendpoint = http://127.0.0.1:1/v2.1\ntoken = a:b\n\
             image_endpoint_override = http://127.0.0.1:1/\n",
        );
        assert!(open(&settings(&opts).unwrap()).await.is_ok());
        let dump = format!(
            "{:?}",
            FixedEndpoint {
                endpoint: Url::parse("http://x/").unwrap(),
                token: Some(Secret::new("a:b")),
                auth_type: "admin_token",
            }
        );
        assert!(!dump.contains("a:b"), "{dump}");
    }

    /// Issue 15: without a catalog the image service must be given, and a service that is
    /// not is an error naming the option, not a request to Nova's URL.
    #[tokio::test]
    async fn issue_15_without_a_catalog_the_other_services_are_given_or_named() {
        let err = settings(&nova(
            "[nova]\nauth_type = none\nendpoint = http://127.0.0.1:1/v2.1\n",
        ))
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "[nova] image_endpoint_override = \"\": auth_type = none needs it (no catalog to \
             find the image service in)"
        );
        let session = open(
            &settings(&nova(
                "[nova]\nauth_type = none\nendpoint = http://127.0.0.1:1/v2.1\n\
                 image_endpoint_override = http://127.0.0.1:2/\n",
            ))
            .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            session.endpoint_overrides().get("image").map(Url::as_str),
            Some("http://127.0.0.1:2/")
        );
        let err = session
            .get_endpoint(NETWORK, &["networks"])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("set [nova] network_endpoint_override"),
            "{err}"
        );
    }
}

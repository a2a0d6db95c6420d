//! The local check: whether the VM's own server answers, as each heartbeat reports it
//! (`serving`). The web role's whole job besides heartbeats is this check of its Tomcat
//! (`--check-url`, the health-check connector of the tomcat-web image); the splitter
//! reports the same way on mod_jk's status worker (`?mime=prop`), which answers as long
//! as Apache accepts connections.

use std::time::Duration;

use crate::http::{self, HttpUrl};

/// A URL on the VM that answers 200 while the VM serves.
#[derive(Debug, Clone)]
pub(crate) struct LocalCheck {
    url: HttpUrl,
}

impl LocalCheck {
    pub(crate) fn new(url: HttpUrl) -> LocalCheck {
        LocalCheck { url }
    }

    pub(crate) fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// Whether the URL answers 200 within `timeout`. Any failure (refused, slow,
    /// malformed, another status) is "not serving"; the reason is logged at debug.
    pub(crate) async fn serving(&self, timeout: Duration) -> bool {
        match http::get(&self.url, timeout).await {
            Ok(response) if response.status == 200 => true,
            Ok(response) => {
                tracing::debug!(url = %self.url, status = response.status, "check: not 200");
                false
            }
            Err(error) => {
                tracing::debug!(%error, "check failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    /// Answers every connection with `answer`, forever.
    const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

    async fn server(answer: &'static [u8]) -> HttpUrl {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(answer).await;
            }
        });
        format!("http://127.0.0.1:{port}/webserver/index.jsp")
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn only_a_200_is_serving() {
        let ok = LocalCheck::new(server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await);
        assert!(ok.serving(CHECK_TIMEOUT).await);
        let busy = LocalCheck::new(server(b"HTTP/1.1 503 Unavailable\r\n\r\n").await);
        assert!(!busy.serving(CHECK_TIMEOUT).await);
        let garbage = LocalCheck::new(server(b"hello\r\n\r\n").await);
        assert!(!garbage.serving(CHECK_TIMEOUT).await);
        // Nobody listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = LocalCheck::new(format!("http://127.0.0.1:{port}/").parse().unwrap());
        assert!(!refused.serving(CHECK_TIMEOUT).await);
        assert_eq!(
            refused.url().to_string(),
            format!("http://127.0.0.1:{port}/")
        );
    }
}

//! Request/reply over RabbitMQ between `autoscaler-manage` and the conductor.
//!
//! The client publishes an enveloped request on `rpc.conductor` with a fresh correlation
//! id, `reply_to = amq.rabbitmq.reply-to` (RabbitMQ's direct reply-to: no reply queue to
//! declare or clean up) and a per-message TTL equal to its timeout, so a request nobody
//! took in time expires instead of being carried out after the operator was told it
//! failed. The conductor answers on the default exchange with the same correlation id, and
//! acknowledges the request only once it is done.

use std::time::Duration;

use chrono::Utc;
use futures_lite::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    envelope::{self, DropReason, Envelope, Payload},
    link::{self, LinkConfig, LinkHandle, Outgoing, PublishError},
    topology::{Topology, RPC_CONDUCTOR},
};

/// RabbitMQ's pseudo-queue for direct reply-to. The conductor sees it as
/// `amq.rabbitmq.reply-to.<the caller's channel, encoded>`, and answers nowhere else.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Whether `reply_to`, as the conductor receives it, is a direct reply-to address: the
/// only kind it answers (issue 17: an answer must not land in another queue).
pub fn is_direct_reply_to(reply_to: &str) -> bool {
    reply_to
        .strip_prefix(DIRECT_REPLY_TO)
        .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

/// The conductor's answer: a JSON result or an error it explains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcReply {
    Ok(serde_json::Value),
    Error(RemoteError),
}

impl Payload for RpcReply {
    const KIND: &'static str = "rpc.reply";
}

/// An error the conductor reports back; `message` is meant for the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// Stable, machine-readable class (`invalid`, `conflict`, `not_found`, `internal`).
    pub kind: String,
    pub message: String,
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Connect(#[from] link::ConnectError),
    #[error("no autoscaler-conductor is running on {broker}: queue {queue} has no consumer")]
    NoConductor { broker: String, queue: String },
    #[error("no autoscaler-conductor answered within {} s on {broker}", .timeout.as_secs())]
    Timeout { timeout: Duration, broker: String },
    #[error("the broker {broker} did not accept the request: {detail}")]
    Publish { broker: String, detail: String },
    #[error("unreadable reply from the conductor: {0}")]
    BadReply(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// One CLI's connection for calls to the conductor.
pub struct RpcClient {
    connection: Connection,
    channel: Channel,
    replies: lapin::Consumer,
    topology: Topology,
    broker: String,
    /// The login of this connection: each request's `user_id`, which the broker checks
    /// and the conductor matches against `[conductor] rpc_allowed_users`.
    user: String,
    sender: String,
}

impl RpcClient {
    /// Connects (trying each host once; the CLI should fail fast, not linger).
    pub async fn connect(
        config: &LinkConfig,
        topology: Topology,
        sender: impl Into<String>,
    ) -> Result<Self, RpcError> {
        let (connection, index) = link::connect(config, 0).await?;
        let broker = format!("{}://{}/", config.url.scheme, config.url.hosts[index]);
        let user = config.url.hosts[index].username.clone();
        let publish_error = |e: lapin::Error| RpcError::Publish {
            broker: broker.clone(),
            detail: e.to_string(),
        };
        let channel = connection.create_channel().await.map_err(publish_error)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(publish_error)?;
        // Direct reply-to requires consuming before publishing, in no-ack mode, on the
        // channel that publishes.
        let replies = channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                ShortString::from(""),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(publish_error)?;
        Ok(RpcClient {
            connection,
            channel,
            replies,
            topology,
            broker,
            user,
            sender: sender.into(),
        })
    }

    /// Whether some conductor consumes the request queue. A passive declare on a channel
    /// of its own: when the queue does not exist the broker closes that channel.
    async fn conductor_listening(&self) -> bool {
        let Ok(probe) = self.connection.create_channel().await else {
            return false;
        };
        let queue = self.topology.conductor_rpc_queue();
        let listening = match probe
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        {
            Ok(q) => q.consumer_count() > 0,
            Err(_) => false,
        };
        let _ = probe.close(200, "probe done".into()).await;
        listening
    }

    /// Sends `request` and waits up to `timeout` for the conductor's answer.
    pub async fn call<Req: Payload, Res: DeserializeOwned>(
        &mut self,
        request: &Req,
        timeout: Duration,
    ) -> Result<Res, RpcError> {
        if !self.conductor_listening().await {
            return Err(RpcError::NoConductor {
                broker: self.broker.clone(),
                queue: self.topology.conductor_rpc_queue(),
            });
        }
        let correlation_id = Uuid::new_v4().to_string();
        let body = envelope::encode(&self.sender, Utc::now(), request);
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(correlation_id.as_str().into())
            .with_message_id(correlation_id.as_str().into())
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_user_id(self.user.as_str().into())
            .with_timestamp(Utc::now().timestamp().try_into().unwrap_or(0))
            .with_expiration(timeout.as_millis().max(1).to_string().into());
        let publish_error = |detail: String| RpcError::Publish {
            broker: self.broker.clone(),
            detail,
        };
        let confirm = self
            .channel
            .basic_publish(
                self.topology.exchange.as_str().into(),
                RPC_CONDUCTOR.into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .map_err(|e| publish_error(e.to_string()))?
            .await
            .map_err(|e| publish_error(e.to_string()))?;
        if let Confirmation::Nack(_) = confirm {
            return Err(publish_error("negative acknowledgement".into()));
        }
        let timed_out = || RpcError::Timeout {
            timeout,
            broker: self.broker.clone(),
        };
        let wait = async {
            while let Some(delivery) = self.replies.next().await {
                let delivery = delivery.map_err(|e| RpcError::BadReply(e.to_string()))?;
                let matches = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .is_some_and(|id| id.as_str() == correlation_id);
                if !matches {
                    continue; // A late answer to an earlier call of this client.
                }
                let reply =
                    decode_reply(&delivery.data).map_err(|e| RpcError::BadReply(e.to_string()))?;
                return match reply {
                    RpcReply::Ok(value) => {
                        serde_json::from_value(value).map_err(|e| RpcError::BadReply(e.to_string()))
                    }
                    RpcReply::Error(error) => Err(RpcError::Remote(error)),
                };
            }
            Err(RpcError::BadReply("the reply stream ended".into()))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// Closes the connection politely (the broker logs no "client unexpectedly closed").
    pub async fn close(self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

fn decode_reply(bytes: &[u8]) -> Result<RpcReply, DropReason> {
    // Replies come from our own conductor, so no size limit beyond the broker's.
    let raw = Envelope::decode(bytes, usize::MAX)?;
    match raw.payload_as::<RpcReply>() {
        Some(reply) => reply.map(|e| e.payload),
        None => Err(raw.unknown()),
    }
}

/// Server side: where and how to answer `request`.
pub struct ReplyTo {
    pub reply_to: String,
    pub correlation_id: Option<String>,
}

impl ReplyTo {
    /// `None` when the request asked for no reply.
    pub fn of(request: &Delivery) -> Option<ReplyTo> {
        let reply_to = request.properties.reply_to().as_ref()?.to_string();
        Some(ReplyTo {
            reply_to,
            correlation_id: request
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
        })
    }

    /// Publishes `reply` on the default exchange. Unconfirmed: a direct reply-to target
    /// lives only as long as the caller's channel, and a caller that gave up is no
    /// reason to hold the conductor.
    pub async fn send(
        &self,
        link: &LinkHandle,
        sender: &str,
        reply: RpcReply,
        patience: Duration,
    ) -> Result<(), PublishError> {
        let body = Envelope::new(sender, Utc::now(), reply).to_bytes();
        link.publish(
            Outgoing {
                exchange: "",
                routing_key: &self.reply_to,
                body: &body,
                confirm: false,
                ttl: None,
                correlation_id: self.correlation_id.as_deref(),
                headers: None,
            },
            patience,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_direct_reply_to_addresses_are_answered() {
        assert!(is_direct_reply_to("amq.rabbitmq.reply-to.g1h2AA5yZXBseUA0"));
        for other in [
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-tox",
            "autoscaler.conductor.telemetry.node1",
            "",
        ] {
            assert!(!is_direct_reply_to(other), "{other}");
        }
    }
}

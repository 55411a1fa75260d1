//! A Socket.IO v5 client on the Engine.IO v4 WebSocket transport, speaking the
//! text protocol directly so that one bench process holds 10,000 subscribers:
//! one task, one TCP connection and one 4 KiB read buffer per socket.
//!
//! Packets used (Engine.IO type digit, then Socket.IO type digit and namespace):
//! `0{...}` open, `2` ping, `3` pong, `40/storage,` namespace connect,
//! `44/storage,{...}` connect error, `42/storage,<id>[event, data]` emit,
//! `43/storage,<id>[data]` ack, `41/storage,` disconnect.

use std::fmt;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// Namespace of the storage channel.
pub const NAMESPACE: &str = "/storage";

/// Ack id of the `subscribe` emit.
const SUBSCRIBE_ACK_ID: u32 = 1;

/// Why a socket could not subscribe, or why it stopped listening.
#[derive(Debug)]
pub enum ClientError {
    /// TCP connect or the WebSocket upgrade failed.
    Connect(String),
    /// The WebSocket failed after the upgrade.
    Transport(String),
    /// The server sent something this client does not expect.
    Protocol(String),
    /// The server refused the namespace or the subscription; holds its message.
    Rejected(String),
    /// The server closed the socket (Engine.IO close, Socket.IO disconnect or WebSocket close).
    Closed,
    /// A handshake step got no answer before the deadline; holds the step.
    TimedOut(&'static str),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect(cause) => write!(f, "connect failed: {cause}"),
            ClientError::Transport(cause) => write!(f, "WebSocket failed: {cause}"),
            ClientError::Protocol(cause) => write!(f, "unexpected packet: {cause}"),
            ClientError::Rejected(message) => write!(f, "server rejected the socket: {message}"),
            ClientError::Closed => write!(f, "server closed the socket"),
            ClientError::TimedOut(step) => write!(f, "timed out {step}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A socket subscribed to some collections of the storage channel.
pub struct Subscriber {
    socket: WebSocketStream<TcpStream>,
}

/// Returns the WebSocket URL of the Socket.IO endpoint under `http_base`
/// (`http://127.0.0.1:1337` gives `ws://127.0.0.1:1337/socket.io/?EIO=4&transport=websocket`).
pub fn websocket_url(http_base: &str) -> String {
    let authority = http_base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    format!("ws://{authority}/socket.io/?EIO=4&transport=websocket")
}

/// Connects to the storage channel and subscribes with `access_token` to
/// `collections`, or to all collections when it is empty.
///
/// Fails with `TimedOut`, naming the step, when the handshake is not complete by `deadline`.
pub async fn subscribe(
    http_base: &str,
    access_token: &str,
    collections: &[&str],
    deadline: tokio::time::Instant,
) -> Result<Subscriber, ClientError> {
    let within = |step: &'static str| move |_| ClientError::TimedOut(step);

    // 1. TCP and the WebSocket upgrade, with small buffers for many sockets.
    let authority = http_base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let tcp = timeout_at(deadline, TcpStream::connect(authority))
        .await
        .map_err(within("connecting TCP"))?
        .map_err(|err| ClientError::Connect(format!("{authority}: {err}")))?;
    tcp.set_nodelay(true)
        .map_err(|err| ClientError::Connect(err.to_string()))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024);
    let upgrade = client_async_with_config(websocket_url(http_base), tcp, Some(config));
    let (socket, _) = timeout_at(deadline, upgrade)
        .await
        .map_err(within("waiting for the WebSocket upgrade"))?
        .map_err(|err| ClientError::Connect(err.to_string()))?;
    let mut subscriber = Subscriber { socket };

    // 2. Engine.IO open, then the namespace connect.
    let open = timeout_at(deadline, subscriber.next_packet())
        .await
        .map_err(within("waiting for the Engine.IO open packet"))??;
    if !open.starts_with('0') {
        return Err(ClientError::Protocol(format!(
            "expected the Engine.IO open packet, got {open:?}"
        )));
    }
    subscriber.send(format!("40{NAMESPACE},")).await?;
    loop {
        let packet = timeout_at(deadline, subscriber.next_packet())
            .await
            .map_err(within("waiting for the namespace connect"))??;
        if packet.starts_with(&format!("40{NAMESPACE},")) {
            break;
        }
        if packet.starts_with(&format!("44{NAMESPACE},")) {
            return Err(ClientError::Rejected(packet.to_string()));
        }
    }

    // 3. `subscribe` with an ack id; the ack says which collections were granted.
    // No `collections` field asks for all six.
    let payload = if collections.is_empty() {
        json!({ "accessToken": access_token })
    } else {
        json!({ "accessToken": access_token, "collections": collections })
    };
    subscriber
        .send(format!(
            "42{NAMESPACE},{SUBSCRIBE_ACK_ID}[\"subscribe\",{payload}]"
        ))
        .await?;
    let ack_prefix = format!("43{NAMESPACE},{SUBSCRIBE_ACK_ID}");
    loop {
        let packet = timeout_at(deadline, subscriber.next_packet())
            .await
            .map_err(within("waiting for the subscribe ack"))??;
        if let Some(body) = packet.strip_prefix(&ack_prefix) {
            return check_subscribe_ack(body).map(|()| subscriber);
        }
    }
}

/// Accepts a `[{success: true, ...}]` ack body and rejects anything else.
fn check_subscribe_ack(body: &str) -> Result<(), ClientError> {
    let reply: Value = serde_json::from_str(body)
        .map_err(|err| ClientError::Protocol(format!("subscribe ack {body:?}: {err}")))?;
    if reply[0]["success"] == Value::Bool(true) {
        return Ok(());
    }
    let message = reply[0]["message"].as_str().unwrap_or(body);
    Err(ClientError::Rejected(message.to_string()))
}

impl Subscriber {
    /// Hands the text of every event packet (`42/storage,[...]`) to `on_event`
    /// and answers pings, until the socket ends; returns why it ended.
    pub async fn listen(mut self, mut on_event: impl FnMut(&str)) -> ClientError {
        let event_prefix = format!("42{NAMESPACE},");
        let disconnect_prefix = format!("41{NAMESPACE},");
        loop {
            let packet = match self.next_packet().await {
                Ok(packet) => packet,
                Err(err) => return err,
            };
            let packet = packet.as_str();
            if packet.starts_with(&event_prefix) {
                on_event(packet);
            } else if packet == "1" || packet.starts_with(&disconnect_prefix) {
                return ClientError::Closed;
            }
        }
    }

    /// Returns the next Engine.IO text packet, answering pings on the way.
    async fn next_packet(&mut self) -> Result<Utf8Bytes, ClientError> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => return Err(ClientError::Closed),
                Some(Err(err)) => return Err(ClientError::Transport(err.to_string())),
                Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                    self.send("3".to_string()).await?;
                }
                Some(Ok(Message::Text(text))) => return Ok(text),
                // WebSocket pings are answered by tungstenite; binary frames are not used here.
                Some(Ok(_)) => {}
            }
        }
    }

    async fn send(&mut self, text: String) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|err| ClientError::Transport(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_from_http_base() {
        assert_eq!(
            websocket_url("http://127.0.0.1:1337/"),
            "ws://127.0.0.1:1337/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn ack_success() {
        assert!(check_subscribe_ack(r#"[{"success":true,"collections":["entries"]}]"#).is_ok());
    }

    #[test]
    fn ack_failure_carries_message() {
        let error =
            check_subscribe_ack(r#"[{"success":false,"message":"Missing or bad accessToken"}]"#)
                .expect_err("rejected");
        assert!(
            matches!(error, ClientError::Rejected(message) if message == "Missing or bad accessToken")
        );
    }
}

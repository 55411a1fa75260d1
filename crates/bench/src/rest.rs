//! The REST side of the bench: APIv3 creates, searches and history pages with a
//! bearer credential, over a pool of keep-alive connections.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Client;

/// Longest a single request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An APIv3 client for one server.
#[derive(Clone)]
pub struct RestClient {
    client: Client,
    /// Edge base URL without a trailing slash.
    base: String,
    /// `Authorization` header value.
    authorization: String,
}

/// A response read to the end.
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `ETag` header, when present.
    pub etag: Option<String>,
    /// Response body.
    pub body: Bytes,
}

impl RestClient {
    /// Creates a client for `base` that sends `bearer` and keeps up to
    /// `connections` idle connections open.
    pub fn new(base: &str, bearer: &str, connections: usize) -> RestClient {
        let client = Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a client without TLS builds");
        RestClient {
            client,
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Bearer {bearer}"),
        }
    }

    /// Sends `POST /api/v3/{collection}` with a JSON body and returns the status.
    pub async fn create(&self, collection: &str, body: String) -> Result<u16, String> {
        let response = self
            .client
            .post(format!("{}/api/v3/{collection}", self.base))
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status().as_u16();
        // Read the body so the connection goes back to the pool.
        response.bytes().await.map_err(|err| err.to_string())?;
        Ok(status)
    }

    /// Sends `GET {path_and_query}` (which starts with `/`) and reads the whole response.
    pub async fn get(&self, path_and_query: &str) -> Result<Reply, String> {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .header("authorization", &self.authorization)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(|err| err.to_string())?;
        Ok(Reply { status, etag, body })
    }
}

/// Reads the epoch milliseconds out of an APIv3 history ETag `W/"<ms>"`.
pub fn etag_millis(etag: &str) -> Option<i64> {
    etag.strip_prefix("W/\"")?.strip_suffix('"')?.parse().ok()
}

/// Counts the documents in a JSON result without parsing it: each document of a
/// bench collection has exactly one `identifier` field.
pub fn count_documents(body: &[u8]) -> usize {
    let needle = b"\"identifier\":";
    body.windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_parsed() {
        assert_eq!(etag_millis("W/\"1733300000123\""), Some(1_733_300_000_123));
        assert_eq!(etag_millis("\"1\""), None);
    }

    #[test]
    fn documents_counted() {
        let body = br#"{"status":200,"result":[{"identifier":"a"},{"identifier":"b"}]}"#;
        assert_eq!(count_documents(body), 2);
    }
}

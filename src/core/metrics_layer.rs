//! A tower layer that counts core's gRPC calls and times them, per method, and
//! runs each in a span carrying the caller's `x-request-id`.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::metrics::METRICS;

/// Wraps core's services with [`MetricsService`].
#[derive(Clone, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// Records the method, the status code and the latency of each call.
///
/// The status is read from the response headers, where gRPC puts it for failures
/// sent without a body; calls whose status travels in trailers count as `0`
/// (OK) here.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let request_id: String = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect();
        let span = tracing::info_span!("grpc", request_id, method = %method);
        let started = Instant::now();
        tracing::Instrument::instrument(self.inner.call(request), span)
            .map(move |result| {
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0")
                        .to_string(),
                    Err(_) => "transport".to_string(),
                };
                METRICS
                    .core_requests
                    .with_label_values(&[&method, &code])
                    .inc();
                METRICS
                    .core_latency
                    .with_label_values(&[&method])
                    .observe(started.elapsed().as_secs_f64());
                result
            })
            .boxed()
    }
}

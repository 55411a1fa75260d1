//! A fleet of Socket.IO subscribers: connects them with bounded concurrency,
//! keeps each listening on its own task, and records every event in a ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::delivery::Ledger;
use crate::latency::{Percentiles, new_histogram};
use crate::socketio;

/// Longest one subscriber may take to connect and receive its subscribe ack.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many end reasons the fleet keeps for the report.
const KEPT_REASONS: usize = 5;

/// How connecting the fleet went.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ConnectSummary {
    /// Subscribers requested.
    pub requested: usize,
    /// Subscribers whose subscribe ack reported success.
    pub subscribed: usize,
    /// Subscribers that failed to connect or subscribe.
    pub failed: usize,
    /// The first failures.
    pub failures: Vec<String>,
    /// Wall time to connect the whole fleet, in seconds.
    pub seconds: f64,
    /// Time from TCP connect to the subscribe ack, per subscriber.
    pub latency: Percentiles,
}

/// Subscribers listening on their own tasks.
pub struct Fleet {
    /// One task per subscriber.
    tasks: Vec<JoinHandle<()>>,
    /// Subscribers subscribed and still listening.
    listening: Arc<AtomicUsize>,
    /// Why the first subscribers stopped listening.
    ended: Arc<std::sync::Mutex<Vec<String>>>,
    /// How connecting went.
    pub summary: ConnectSummary,
}

impl Fleet {
    /// Connects `count` subscribers to `collections` at `http_base`, at most
    /// `concurrency` handshakes at a time; subscriber `i` records events in slot
    /// `i` of `ledger`.
    pub async fn connect(
        http_base: &str,
        access_token: &str,
        collections: &[&str],
        count: usize,
        concurrency: usize,
        ledger: Arc<Ledger>,
    ) -> Fleet {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let listening = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (results, mut outcomes) = mpsc::unbounded_channel::<Result<Duration, String>>();
        let collections: Arc<Vec<String>> =
            Arc::new(collections.iter().map(|c| c.to_string()).collect());

        // 1. One task per subscriber: subscribe under the gate, then listen until the end.
        let mut tasks = Vec::with_capacity(count);
        for index in 0..count {
            let (gate, listening, ended, results, ledger, collections) = (
                gate.clone(),
                listening.clone(),
                ended.clone(),
                results.clone(),
                ledger.clone(),
                collections.clone(),
            );
            let http_base = http_base.to_string();
            let access_token = access_token.to_string();
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("gate is never closed");
                let begun = Instant::now();
                let names: Vec<&str> = collections.iter().map(String::as_str).collect();
                let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
                let attempt =
                    socketio::subscribe(&http_base, &access_token, &names, deadline).await;
                drop(permit);
                let subscriber = match attempt {
                    Ok(subscriber) => subscriber,
                    Err(err) => {
                        ledger.exclude(index);
                        let _ = results.send(Err(format!("subscriber {index}: {err}")));
                        return;
                    }
                };
                listening.fetch_add(1, Ordering::Relaxed);
                let _ = results.send(Ok(begun.elapsed()));
                drop(results);

                let reason = subscriber
                    .listen(|text| ledger.record_event(index, text))
                    .await;
                listening.fetch_sub(1, Ordering::Relaxed);
                let mut ended = ended.lock().expect("lock is not poisoned");
                if ended.len() < KEPT_REASONS {
                    ended.push(format!("subscriber {index}: {reason}"));
                }
            }));
        }
        drop(results);

        // 2. Collect one outcome per subscriber.
        let mut summary = ConnectSummary {
            requested: count,
            ..ConnectSummary::default()
        };
        let mut latency = new_histogram();
        while let Some(outcome) = outcomes.recv().await {
            match outcome {
                Ok(elapsed) => {
                    summary.subscribed += 1;
                    latency.saturating_record(elapsed.as_micros().max(1) as u64);
                }
                Err(failure) => {
                    summary.failed += 1;
                    if summary.failures.len() < KEPT_REASONS {
                        summary.failures.push(failure);
                    }
                }
            }
        }
        summary.seconds = started.elapsed().as_secs_f64();
        summary.latency = Percentiles::of(&latency);
        Fleet {
            tasks,
            listening,
            ended,
            summary,
        }
    }

    /// Returns how many subscribers are still listening.
    pub fn listening(&self) -> usize {
        self.listening.load(Ordering::Relaxed)
    }

    /// Returns why the first subscribers that stopped listening stopped.
    pub fn end_reasons(&self) -> Vec<String> {
        self.ended.lock().expect("lock is not poisoned").clone()
    }

    /// Returns an error when no subscriber subscribed, and prints a warning naming
    /// the first failures when some did not; the ledger owes those nothing.
    pub fn require_any(&self) -> Result<(), String> {
        if self.summary.subscribed == 0 {
            return Err(format!(
                "no subscriber could subscribe; first failures: {:?}",
                self.summary.failures
            ));
        }
        if self.summary.failed > 0 {
            eprintln!(
                "warning: {} of {} subscribers failed to subscribe and are left out; first failures: {:?}",
                self.summary.failed, self.summary.requested, self.summary.failures
            );
        }
        Ok(())
    }

    /// Drops every subscriber's connection.
    pub fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

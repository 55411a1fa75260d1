//! nightjar-bench: a load generator for Nightjar's REST API, gRPC API and
//! Socket.IO storage channel, and for the socket.io 4 reference server in
//! `bench/reference`. `BENCHMARKS.md` at the repository root lists the commands
//! and the figures they produced.

pub mod cli;
pub mod delivery;
pub mod document;
pub mod fleet;
pub mod grpc;
pub mod latency;
pub mod plot;
pub mod process;
pub mod report;
pub mod rest;
pub mod scenario;
pub mod server;
pub mod socketio;
pub mod summary;

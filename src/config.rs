//! Settings shared by core and edge, read from flags and the environment variables
//! that Nightscout users know.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use nightjar_store::MongoSettings;

/// Settings of the core process.
#[derive(Debug, Clone, Args)]
pub struct CoreConfig {
    /// Address of the gRPC listener; port 0 picks a free port.
    #[arg(long, env = "NIGHTJAR_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Directory of the embedded store and the generated API_SECRET.
    #[arg(long, env = "NIGHTJAR_DATA_DIR", default_value = "./nightjar-data")]
    pub data_dir: PathBuf,

    /// Roles whose permissions every authenticated subject also gets (comma-separated).
    #[arg(
        long,
        env = "AUTH_DEFAULT_ROLES",
        default_value = "readable",
        value_delimiter = ','
    )]
    pub auth_default_roles: Vec<String>,

    /// Delay added per failed authentication from one IP, in milliseconds; 0 turns it off.
    #[arg(long, env = "AUTH_FAIL_DELAY", default_value_t = 5000)]
    pub auth_fail_delay: u64,

    /// Largest `limit` a search or history request may ask for.
    #[arg(long, env = "API3_MAX_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub api3_max_limit: u32,

    /// Whether APIv3 checks credentials and permissions (false is for development only).
    #[arg(long, env = "API3_SECURITY_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub api3_security_enable: bool,

    /// Whether create deduplicates by fallback fields for documents without identifier.
    #[arg(long, env = "API3_DEDUP_FALLBACK_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub api3_dedup_fallback_enabled: bool,

    /// Whether create and update take the date from `created_at` when `date` is missing.
    #[arg(long, env = "API3_CREATED_AT_FALLBACK_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub api3_created_at_fallback_enabled: bool,

    /// Address of a `/metrics` listener for core alone; `serve` also exposes
    /// metrics on the edge port.
    #[arg(long, env = "NIGHTJAR_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// PEM certificate chain that turns on TLS for the gRPC listener (with `--grpc-tls-key`).
    #[arg(long, env = "NIGHTJAR_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    pub grpc_tls_cert: Option<PathBuf>,

    /// PEM private key of `--grpc-tls-cert`.
    #[arg(long, env = "NIGHTJAR_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    pub grpc_tls_key: Option<PathBuf>,

    /// How long change records are kept for resuming watchers, in seconds.
    #[arg(long, env = "NIGHTJAR_CHANGE_RETENTION", default_value_t = 7 * 24 * 3600)]
    pub change_retention: u64,

    /// Most change records kept for resuming watchers; older ones are pruned.
    #[arg(
        long,
        env = "NIGHTJAR_CHANGE_RETENTION_COUNT",
        default_value_t = 1_000_000
    )]
    pub change_retention_count: u64,

    /// Lifetime of JWTs issued by `/api/v2/authorization/request`, in seconds.
    #[arg(long, env = "NIGHTJAR_JWT_LIFETIME", default_value_t = 8 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub jwt_lifetime: u64,

    /// MongoDB connection and collection names, read from the environment as Nightscout
    /// reads them (`MONGODB_URI`, `MONGO_CONNECTION`, `CUSTOMCONNSTR_mongo` and others,
    /// see [`MongoSettings::from_lookup`]). `None` selects the embedded store. It is not
    /// a flag, so the password never shows in `--help` or the process list.
    #[arg(skip = mongo_settings_from_env())]
    pub mongo: Option<MongoSettings>,
}

/// Reads the MongoDB settings from the process environment.
pub fn mongo_settings_from_env() -> Option<MongoSettings> {
    MongoSettings::from_lookup(|name| std::env::var(name).ok())
}

/// Settings of the edge process.
#[derive(Debug, Clone, Args)]
pub struct EdgeConfig {
    /// Port of the HTTP and Socket.IO listener; 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 1337)]
    pub port: u16,

    /// Host or address of the HTTP and Socket.IO listener.
    #[arg(long, env = "HOSTNAME", default_value = "127.0.0.1")]
    pub hostname: String,

    /// Largest request body the edge accepts, in bytes.
    #[arg(long, env = "NIGHTJAR_MAX_BODY_BYTES", default_value_t = 50 * 1024 * 1024,
          value_parser = positive_size)]
    pub max_body_bytes: usize,

    /// Seconds a client may take to send a request's headers on the plain HTTP
    /// listener; slower connections are closed.
    #[arg(long, env = "NIGHTJAR_HEADER_READ_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,

    /// PEM certificate chain that turns on HTTPS for the edge listener (with `--tls-key`).
    #[arg(long, env = "NIGHTJAR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "NIGHTJAR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Address of core for its clients (the edge, the CLI).
#[derive(Debug, Clone, Args)]
pub struct CoreClientConfig {
    /// URL of the core's gRPC listener.
    #[arg(
        long,
        env = "NIGHTJAR_CORE_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub core_url: String,

    /// PEM CA certificate that core's certificate must chain to, when the core URL
    /// is https://.
    #[arg(long, env = "NIGHTJAR_CORE_CA", global = true)]
    pub core_ca: Option<PathBuf>,
}

/// Parses a byte count of at least 1.
fn positive_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(size) => Ok(size),
        Err(err) => Err(format!("{err}; expected a number of bytes")),
    }
}

/// Environment variables that set flags, for naming them in configuration errors.
pub const ENVIRONMENT_SETTINGS: &[(&str, &str)] = &[
    ("PORT", "--port"),
    ("HOSTNAME", "--hostname"),
    ("NIGHTJAR_GRPC_ADDR", "--grpc-addr"),
    ("NIGHTJAR_CORE_URL", "--core-url"),
    ("NIGHTJAR_DATA_DIR", "--data-dir"),
    ("NIGHTJAR_METRICS_ADDR", "--metrics-addr"),
    ("AUTH_DEFAULT_ROLES", "--auth-default-roles"),
    ("AUTH_FAIL_DELAY", "--auth-fail-delay"),
    ("API3_MAX_LIMIT", "--api3-max-limit"),
    ("API3_SECURITY_ENABLE", "--api3-security-enable"),
    (
        "API3_DEDUP_FALLBACK_ENABLED",
        "--api3-dedup-fallback-enabled",
    ),
    (
        "API3_CREATED_AT_FALLBACK_ENABLED",
        "--api3-created-at-fallback-enabled",
    ),
    ("NIGHTJAR_CHANGE_RETENTION", "--change-retention"),
    (
        "NIGHTJAR_CHANGE_RETENTION_COUNT",
        "--change-retention-count",
    ),
    ("NIGHTJAR_JWT_LIFETIME", "--jwt-lifetime"),
    ("NIGHTJAR_MAX_BODY_BYTES", "--max-body-bytes"),
    ("NIGHTJAR_HEADER_READ_TIMEOUT", "--header-read-timeout"),
    ("NIGHTJAR_LOG_FORMAT", "--log-format"),
    ("NIGHTJAR_GRPC_TLS_CERT", "--grpc-tls-cert"),
    ("NIGHTJAR_GRPC_TLS_KEY", "--grpc-tls-key"),
    ("NIGHTJAR_TLS_CERT", "--tls-cert"),
    ("NIGHTJAR_TLS_KEY", "--tls-key"),
    ("NIGHTJAR_CORE_CA", "--core-ca"),
];

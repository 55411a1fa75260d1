//! Command-line interface: `serve`, `core`, `edge`, and subject and role management.

use clap::{Parser, Subcommand};

use crate::config::{CoreClientConfig, CoreConfig, EdgeConfig};
use crate::proto::admin_client::AdminClient;
use crate::proto::{Role, SaveRoleRequest, SaveSubjectRequest, Subject};
use crate::{core, edge, secret};

/// Nightscout APIv3 compatible storage service.
#[derive(Debug, Parser)]
#[command(name = "nightjar", version, about)]
pub struct Cli {
    /// Log format: `text` or `json`.
    #[arg(long, env = "NIGHTJAR_LOG_FORMAT", default_value = "text", global = true,
          value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run core and edge in one process on the embedded store.
    Serve {
        #[command(flatten)]
        core: CoreConfig,
        #[command(flatten)]
        edge: EdgeConfig,
    },
    /// Run only the gRPC core.
    Core {
        #[command(flatten)]
        core: CoreConfig,
    },
    /// Run only the HTTP and Socket.IO edge, connected to a core.
    Edge {
        #[command(flatten)]
        edge: EdgeConfig,
        #[command(flatten)]
        client: CoreClientConfig,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Manage subjects (the holders of access tokens) on a running core.
    Subject {
        #[command(subcommand)]
        action: SubjectAction,
        #[command(flatten)]
        client: CoreClientConfig,
        #[command(flatten)]
        secret: SecretSource,
    },
    /// Manage roles (named sets of permissions) on a running core.
    Role {
        #[command(subcommand)]
        action: RoleAction,
        #[command(flatten)]
        client: CoreClientConfig,
        #[command(flatten)]
        secret: SecretSource,
    },
}

/// Source of API_SECRET for a client process.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretSource {
    /// API_SECRET; when unset, read from the file `serve` generated in the data directory.
    #[arg(
        long = "api-secret",
        env = "API_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub api_secret: Option<String>,

    /// Data directory holding a generated API_SECRET.
    #[arg(
        long = "data-dir",
        env = "NIGHTJAR_DATA_DIR",
        default_value = "./nightjar-data",
        global = true
    )]
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
enum SubjectAction {
    /// Create a subject and print its access token.
    Add {
        /// Subject name; the access token starts with it.
        name: String,
        /// Role names (comma-separated), such as `admin` or `readable`.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Free-text notes.
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// List subjects with their roles and access tokens.
    List,
    /// Delete a subject by id.
    Remove {
        /// The subject's 24-hex-digit id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum RoleAction {
    /// Create a role.
    Add {
        /// Role name.
        name: String,
        /// Shiro wildcard permissions (comma-separated), such as `api:entries:read`.
        #[arg(long, value_delimiter = ',', required = true)]
        permissions: Vec<String>,
        /// Free-text notes.
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// List stored roles.
    List,
    /// Delete a role by id.
    Remove {
        /// The role's 24-hex-digit id.
        id: String,
    },
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { core, edge } => serve(core, edge).await,
        Command::Core { core } => {
            let secret = secret::load_or_create(&core.data_dir)?;
            let running = core::start(core, secret.secret.clone()).await?;
            greet_first_start(&running, &secret).await;
            running.wait_for_shutdown().await
        }
        Command::Edge {
            edge,
            client,
            secret,
        } => {
            let secret = secret::load_existing(secret.api_secret, &secret.data_dir)?;
            edge::run(edge, client.core_url, client.core_ca, secret).await
        }
        Command::Subject {
            action,
            client,
            secret,
        } => {
            let secret = secret::load_existing(secret.api_secret, &secret.data_dir)?;
            subject(action, &client, &secret).await
        }
        Command::Role {
            action,
            client,
            secret,
        } => {
            let secret = secret::load_existing(secret.api_secret, &secret.data_dir)?;
            role(action, &client, &secret).await
        }
    }
}

/// Runs core and edge in one process; the edge reaches core over loopback gRPC.
async fn serve(core_config: CoreConfig, edge_config: EdgeConfig) -> Result<(), String> {
    let secret = secret::load_or_create(&core_config.data_dir)?;
    let core_certificate = core_config.grpc_tls_cert.clone();
    let running = core::start(core_config, secret.secret.clone()).await?;
    let core_url = match core_certificate {
        Some(certificate) => {
            // The edge verifies core against core's own certificate.
            (format!("https://{}", running.address), Some(certificate))
        }
        None => (format!("http://{}", running.address), None),
    };
    let (core_url, core_ca) = core_url;
    let edge = tokio::spawn(edge::run(
        edge_config,
        core_url,
        core_ca,
        secret.secret.clone(),
    ));
    greet_first_start(&running, &secret).await;

    tokio::select! {
        result = running.wait_for_shutdown() => result,
        result = edge => result.map_err(|err| format!("edge task failed: {err}"))?,
    }
}

/// On the start that generated API_SECRET, creates the `admin` subject and shows its token.
async fn greet_first_start(running: &core::Running, secret: &secret::LoadedSecret) {
    if !secret.generated {
        return;
    }
    match running.core.create_first_admin().await {
        Ok(token) => secret::announce_first_start(secret, &token),
        Err(err) => tracing::error!(cause = %err, "cannot create the first admin subject"),
    }
}

async fn admin_client(
    core: &CoreClientConfig,
) -> Result<AdminClient<tonic::transport::Channel>, String> {
    let endpoint = edge::core_endpoint(&core.core_url, core.core_ca.as_deref())?;
    let channel = endpoint.connect().await.map_err(|err| {
        format!(
            "cannot connect to core at {}: {err}; is `nightjar serve` or `nightjar core` running?",
            core.core_url
        )
    })?;
    Ok(AdminClient::new(channel))
}

fn with_secret<T>(message: T, secret: &nightjar_auth::ApiSecret) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = secret.sha1_hex().parse() {
        request.metadata_mut().insert("api-secret", value);
    }
    request
}

async fn subject(
    action: SubjectAction,
    core: &CoreClientConfig,
    secret: &nightjar_auth::ApiSecret,
) -> Result<(), String> {
    let mut client = admin_client(core).await?;
    match action {
        SubjectAction::Add { name, roles, notes } => {
            let subject = Subject {
                name,
                roles,
                notes,
                ..Default::default()
            };
            let saved = client
                .save_subject(with_secret(
                    SaveSubjectRequest {
                        subject: Some(subject),
                        must_create: true,
                    },
                    secret,
                ))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .subject
                .unwrap_or_default();
            eprintln!(
                "created subject {} ({}) with roles {}",
                saved.name,
                saved.id,
                saved.roles.join(",")
            );
            println!("{}", saved.access_token);
        }
        SubjectAction::List => {
            let subjects = client
                .list_subjects(with_secret(Default::default(), secret))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .subjects;
            for s in subjects {
                println!(
                    "{}\t{}\t{}\t{}",
                    s.id,
                    s.name,
                    s.roles.join(","),
                    s.access_token
                );
            }
        }
        SubjectAction::Remove { id } => {
            let deleted = client
                .delete_subject(with_secret(
                    crate::proto::DeleteByIdRequest { id: id.clone() },
                    secret,
                ))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .deleted;
            if !deleted {
                return Err(format!("no subject with id {id}"));
            }
        }
    }
    Ok(())
}

async fn role(
    action: RoleAction,
    core: &CoreClientConfig,
    secret: &nightjar_auth::ApiSecret,
) -> Result<(), String> {
    let mut client = admin_client(core).await?;
    match action {
        RoleAction::Add {
            name,
            permissions,
            notes,
        } => {
            let role = Role {
                name,
                permissions,
                notes,
                ..Default::default()
            };
            let saved = client
                .save_role(with_secret(
                    SaveRoleRequest {
                        role: Some(role),
                        must_create: true,
                    },
                    secret,
                ))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .role
                .unwrap_or_default();
            println!(
                "{}\t{}\t{}",
                saved.id,
                saved.name,
                saved.permissions.join(",")
            );
        }
        RoleAction::List => {
            let roles = client
                .list_roles(with_secret(Default::default(), secret))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .roles;
            for r in roles {
                println!("{}\t{}\t{}", r.id, r.name, r.permissions.join(","));
            }
        }
        RoleAction::Remove { id } => {
            let deleted = client
                .delete_role(with_secret(
                    crate::proto::DeleteByIdRequest { id: id.clone() },
                    secret,
                ))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner()
                .deleted;
            if !deleted {
                return Err(format!("no role with id {id}"));
            }
        }
    }
    Ok(())
}

//! API_SECRET: taken from the environment, or generated on first start and kept in
//! the data directory (file mode 0600). It is never logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use nightjar_auth::ApiSecret;
use rand::distr::{Alphanumeric, SampleString};

/// Name of the file that keeps a generated API_SECRET.
const SECRET_FILE: &str = "api_secret";

/// Name of the embedded store's database file.
const STORE_FILE: &str = "nightjar.db";

/// Length of a generated API_SECRET, in characters.
const GENERATED_LENGTH: usize = 32;

/// The API_SECRET a server runs with, and where it came from.
pub struct LoadedSecret {
    /// The secret.
    pub secret: ApiSecret,
    /// The file it was read from or written to; `None` when it came from the environment.
    pub path: Option<PathBuf>,
    /// True when this start generated it.
    pub generated: bool,
}

/// Returns API_SECRET from the environment, else from the data directory, else
/// generates one and stores it there.
pub fn load_or_create(data_dir: &Path) -> Result<LoadedSecret, String> {
    if let Some(secret) = from_environment()? {
        return Ok(LoadedSecret {
            secret,
            path: None,
            generated: false,
        });
    }

    let path = data_dir.join(SECRET_FILE);
    if path.exists() {
        let secret = read_file(&path)?;
        return Ok(LoadedSecret {
            secret,
            path: Some(path),
            generated: false,
        });
    }

    // A store without its secret file was started with API_SECRET set: a new
    // secret would silently invalidate every access token and JWT.
    if data_dir.join(STORE_FILE).exists() {
        return Err(format!(
            "API_SECRET is not set and {} does not exist, but {} holds data written with another \
             API_SECRET; set API_SECRET to the value used before",
            path.display(),
            data_dir.display()
        ));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|err| format!("cannot create data directory {}: {err}", data_dir.display()))?;
    let text = Alphanumeric.sample_string(&mut rand::rng(), GENERATED_LENGTH);
    write_private(&path, &text)?;
    let secret = ApiSecret::new(&text).map_err(|err| err.to_string())?;
    Ok(LoadedSecret {
        secret,
        path: Some(path),
        generated: true,
    })
}

/// Returns API_SECRET for a client process: the given value, else the data directory's file.
pub fn load_existing(given: Option<String>, data_dir: &Path) -> Result<ApiSecret, String> {
    if let Some(text) = given.filter(|t| !t.is_empty()) {
        return ApiSecret::new(&text).map_err(|err| format!("invalid API_SECRET: {err}"));
    }
    let path = data_dir.join(SECRET_FILE);
    if !path.exists() {
        return Err(format!(
            "API_SECRET is not set and {} does not exist; set API_SECRET or --data-dir to the server's data directory",
            path.display()
        ));
    }
    read_file(&path)
}

fn from_environment() -> Result<Option<ApiSecret>, String> {
    match std::env::var("API_SECRET") {
        Ok(text) if !text.is_empty() => ApiSecret::new(&text)
            .map(Some)
            .map_err(|err| format!("invalid API_SECRET: {err}")),
        _ => Ok(None),
    }
}

fn read_file(path: &Path) -> Result<ApiSecret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    ApiSecret::new(text.trim())
        .map_err(|err| format!("invalid API_SECRET in {}: {err}", path.display()))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Prints, on the terminal and not in the log, where the generated secret is and an
/// admin access token, so a newcomer can subscribe right away.
pub fn announce_first_start(secret: &LoadedSecret, admin_token: &str) {
    let location = secret
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!();
    println!("  Nightjar generated an API_SECRET and stored it in {location}");
    println!("  Admin access token (shown once): {admin_token}");
    println!(
        "  Use it in the sample page or exchange it for a JWT at /api/v2/authorization/request/<token>."
    );
    println!();
}

//! The settings of `sandlot serve`: the same names as command-line flags
//! and as keys of its `--config` TOML file, merged (flags first, then the
//! file, then the defaults) into a `ServerConfig`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{DatasetLimits, Limits, RegistryConfig, ServerConfig};

/// The settings of `serve`, as flags and as `--config` keys: every one
/// optional (the defaults fill in), unknown keys refused.
#[derive(clap::Args, Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Address to listen on [default: 127.0.0.1:8765]; anything but loopback needs a token.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Folder for the records of runs and for datasets
    /// [default: $SANDLOT_DATA_DIR, else $XDG_DATA_HOME/sandlot, else ~/.local/share/sandlot].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accepted tokens (config file only: a command line is visible to every user).
    #[arg(skip)]
    tokens: Option<Vec<String>>,
    /// Wall-clock limit of each run, in seconds [default: 10].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Memory limit of each run, in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    memory: Option<usize>,
    /// Runs (and model calls) going at once; more are refused as busy [default: 64].
    #[arg(long)]
    max_running: Option<usize>,
    /// Runs one client (token, else address) may have going [default: a quarter of --max-running].
    #[arg(long)]
    max_running_per_client: Option<usize>,
    /// New runs one client may start per second, on average; bursts of twice as many pass [default: 50].
    #[arg(long, value_name = "RUNS")]
    runs_per_second: Option<f64>,
    /// Seconds a finished session is kept in memory after its last use [default: 600].
    #[arg(long, value_name = "SECONDS")]
    idle_expiry: Option<u64>,
    /// Memory all kept (idle, live) instances may hold together, in MiB [default: 2048].
    #[arg(long, value_name = "MIB")]
    live_memory: Option<usize>,
    /// Memory all sessions' placeholders may take together, in MiB [default: 1024].
    #[arg(long, value_name = "MIB")]
    placeholder_memory: Option<usize>,
    /// Disk the saved runs' placeholders may take in the data folder, in MiB [default: 4096].
    #[arg(long, value_name = "MIB")]
    stored_placeholder_mib: Option<u64>,
    /// Hours the records of finished runs, and unfinished uploads, are kept [default: 168].
    #[arg(long, value_name = "HOURS")]
    retention_hours: Option<u64>,
    /// Connections held at once [default: 1024, lowered to fit the open-files limit].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections held at once from one client address [default: 128].
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Seconds a client has to send a request's headers [default: 10].
    #[arg(long, value_name = "SECONDS")]
    header_timeout: Option<f64>,
    /// Seconds a socket has to send its first message (with its token, when there are tokens) [default: 10].
    #[arg(long, value_name = "SECONDS")]
    first_message_timeout: Option<f64>,
    /// Seconds after which a socket with nothing going and nothing sent is closed [default: 300].
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// A host name the server answers to besides IP addresses and localhost (repeatable).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Option<Vec<String>>,
    /// A web origin (https://example.org) whose pages may use the server (repeatable).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Option<Vec<String>>,
    /// The largest dataset file accepted, in MiB [default: 4096].
    #[arg(long, value_name = "MIB")]
    max_dataset_file_mib: Option<u64>,
    /// Datasets kept at once [default: 1000].
    #[arg(long)]
    max_datasets: Option<usize>,
    /// All datasets together, in MiB [default: 65536].
    #[arg(long, value_name = "MIB")]
    max_datasets_mib: Option<u64>,
    /// Disk space datasets must leave free, in MiB [default: 1024].
    #[arg(long, value_name = "MIB")]
    min_free_disk_mib: Option<u64>,
    /// Started as root: become this user once the port is bound (the data folder is given to it).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Instances kept ready per language, so a session need not wait for one [default: 4; 0: none; at most 64].
    #[arg(long, value_name = "COUNT")]
    warm_instances: Option<usize>,
    /// Restrict the server's own file access with Landlock where the kernel has it [default: true].
    #[arg(long, value_name = "BOOL")]
    landlock: Option<bool>,
    /// Refuse, with a seccomp filter, the system calls the server never makes (starting programs,
    /// tracing, namespaces, mounts, kernel modules, bpf...) once it runs [default: true].
    #[arg(long, value_name = "BOOL")]
    seccomp: Option<bool>,
    /// Trade CPU for round-trip time: a socket polls 250 us for its client's next message before
    /// it waits, and idle CPUs poll instead of halting (Linux PM QoS: root and a cpuidle driver).
    /// Small model calls answer 1.3-3x sooner, at the cost of spinning CPUs [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    low_latency: Option<bool>,
    /// Join a cluster through its NATS servers (nats://host:4222, comma-separated; JetStream on):
    /// one-shot runs go to whichever node has room. Every node needs the same tokens and limits.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster: letters, digits, '-' and '_' [default: the host's name and the port].
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Cluster mode: seconds a one-shot run may wait for a node with room before it ends as
    /// timeout [default: the run's time limit].
    #[arg(long, value_name = "SECONDS")]
    queue_wait: Option<f64>,
    /// Cluster mode: a one-shot run sent to this node runs here, without the queue, while fewer
    /// than N runs go here and none waits in the queue; 0 sends every one [default: the cores].
    #[arg(long, value_name = "N")]
    local_runs: Option<usize>,
    /// Cluster mode: a file holding the cluster secret, the same on every node, with which every
    /// message between nodes is sealed (or the environment variable SANDLOT_CLUSTER_SECRET).
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// The cluster secret itself (config file only: a command line is visible to every user).
    #[arg(skip)]
    cluster_secret: Option<String>,
    /// Cluster mode: a NATS credentials file (.creds: a user JWT and its nkey seed) to connect with.
    #[arg(long, value_name = "FILE")]
    nats_credentials: Option<PathBuf>,
    /// Cluster mode: a file holding the NATS nkey seed (SU...) to connect with.
    #[arg(long, value_name = "FILE")]
    nats_nkey_seed_file: Option<PathBuf>,
    /// Cluster mode: the NATS user to connect as; its password in the config file
    /// (nats_password) or the environment variable SANDLOT_NATS_PASSWORD.
    #[arg(long, value_name = "NAME")]
    nats_user: Option<String>,
    /// The NATS user's password (config file only; or SANDLOT_NATS_PASSWORD).
    #[arg(skip)]
    nats_password: Option<String>,
    /// A NATS token to connect with (config file only; or SANDLOT_NATS_TOKEN).
    #[arg(skip)]
    nats_token: Option<String>,
    /// Cluster mode: the certificate authority (PEM) the NATS servers' certificates are checked
    /// against; TLS is then required [default: the system's, when the server asks for TLS].
    #[arg(long, value_name = "FILE")]
    nats_tls_ca: Option<PathBuf>,
    /// Cluster mode: this node's TLS client certificate (PEM), for NATS servers that verify clients.
    #[arg(long, value_name = "FILE")]
    nats_tls_cert: Option<PathBuf>,
    /// Cluster mode: the key (PEM) of --nats-tls-cert.
    #[arg(long, value_name = "FILE")]
    nats_tls_key: Option<PathBuf>,
}

/// `a.or(b)` for each named field.
macro_rules! either {
    ($a:ident, $b:ident; $($field:ident),*) => {
        ServeSettings { $($field: $a.$field.or($b.$field)),* }
    };
}

impl ServeSettings {
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{} is not a valid config file: {e}", path.display()))
    }

    /// These settings, with `other`'s where these have none.
    pub fn or(self: Box<Self>, other: ServeSettings) -> ServeSettings {
        either!(self, other; listen, data_dir, tokens, timeout, memory, max_running, max_running_per_client,
            runs_per_second, idle_expiry, live_memory, placeholder_memory, stored_placeholder_mib, retention_hours, max_connections,
            max_connections_per_address, header_timeout, first_message_timeout, idle_timeout, allowed_hosts,
            allowed_origins, max_dataset_file_mib, max_datasets, max_datasets_mib, min_free_disk_mib, user, landlock, seccomp, warm_instances, low_latency, cluster, node_name, queue_wait, local_runs,
            cluster_secret_file, cluster_secret, nats_credentials, nats_nkey_seed_file, nats_user, nats_password,
            nats_token, nats_tls_ca, nats_tls_cert, nats_tls_key)
    }

    /// Whether to restrict the process with Landlock.
    pub fn landlock(&self) -> bool {
        self.landlock.unwrap_or(true)
    }

    /// Whether to trade CPU for round-trip time (`latency.rs`).
    pub fn low_latency(&self) -> bool {
        self.low_latency.unwrap_or(false)
    }

    pub fn into_config(self) -> Result<ServerConfig, String> {
        #[cfg(not(feature = "cluster"))]
        if self.cluster.is_some() {
            return Err("this sandlot was built without cluster mode (the `cluster` feature)".into());
        }
        #[cfg(feature = "cluster")]
        let cluster = self.cluster_config()?;
        let mut tokens = self.tokens.unwrap_or_default();
        if let Some(env) = std::env::var_os("SANDLOT_TOKENS") {
            let env = env.into_string().map_err(|_| "SANDLOT_TOKENS is not valid UTF-8")?;
            tokens.extend(env.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string));
        }
        if let Some(count) = self.warm_instances
            && count > crate::MAX_WARM_INSTANCES
        {
            return Err(format!(
                "--warm-instances is {count}; it can be at most {} per language (each is a whole instance held in memory)",
                crate::MAX_WARM_INSTANCES
            ));
        }
        let defaults = ServerConfig::default();
        let registry = RegistryConfig::default();
        let mib = |m: usize| m.saturating_mul(1 << 20);
        let mib64 = |m: u64| m.saturating_mul(1 << 20);
        let seconds = |s: Option<f64>, default: Duration, what: &str| match s {
            Some(s) => Duration::try_from_secs_f64(s).map_err(|e| format!("{what}: {e}")),
            None => Ok(default),
        };
        Ok(ServerConfig {
            listen: self.listen.unwrap_or(defaults.listen),
            limits: limits(
                self.timeout.unwrap_or(Limits::DEFAULT_WALL_CLOCK.as_secs_f64()),
                self.memory.unwrap_or(Limits::DEFAULT_MEMORY_BYTES >> 20),
            )?,
            registry: RegistryConfig {
                max_running: self.max_running.unwrap_or(registry.max_running),
                max_running_per_client: self.max_running_per_client.or(registry.max_running_per_client),
                runs_per_second_per_client: self.runs_per_second.unwrap_or(registry.runs_per_second_per_client),
                idle_expiry: self.idle_expiry.map_or(registry.idle_expiry, Duration::from_secs),
                live_memory_bytes: self.live_memory.map_or(registry.live_memory_bytes, mib),
                placeholder_memory_bytes: self.placeholder_memory.map_or(registry.placeholder_memory_bytes, mib),
                stored_placeholder_bytes: self.stored_placeholder_mib.map_or(registry.stored_placeholder_bytes, mib64),
                ..registry
            },
            data_dir: Some(self.data_dir.unwrap_or_else(default_data_dir)),
            tokens,
            retention: self.retention_hours.map_or(defaults.retention, |h| Duration::from_secs(h.saturating_mul(3600))),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_address: self
                .max_connections_per_address
                .unwrap_or(defaults.max_connections_per_address),
            header_timeout: seconds(self.header_timeout, defaults.header_timeout, "header_timeout")?,
            first_message_timeout: seconds(
                self.first_message_timeout,
                defaults.first_message_timeout,
                "first_message_timeout",
            )?,
            idle_timeout: seconds(self.idle_timeout, defaults.idle_timeout, "idle_timeout")?,
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            allowed_origins: self.allowed_origins.unwrap_or_default(),
            datasets: DatasetLimits {
                max_file_bytes: self.max_dataset_file_mib.map_or(defaults.datasets.max_file_bytes, mib64),
                max_datasets: self.max_datasets.unwrap_or(defaults.datasets.max_datasets),
                max_total_bytes: self.max_datasets_mib.map_or(defaults.datasets.max_total_bytes, mib64),
                min_free_bytes: self.min_free_disk_mib.map_or(defaults.datasets.min_free_bytes, mib64),
            },
            run_as: self.user.as_deref().map(crate::harden::RunAs::lookup).transpose()?,
            seccomp: self.seccomp.unwrap_or(true),
            warm_instances: self.warm_instances,
            #[cfg(feature = "cluster")]
            cluster,
            ..defaults
        })
    }

    /// Cluster mode's settings, if `--cluster` is given.
    #[cfg(feature = "cluster")]
    fn cluster_config(&self) -> Result<Option<crate::cluster::ClusterConfig>, String> {
        Ok(match &self.cluster {
            Some(url) => {
                if let Some(node) = &self.node_name {
                    crate::cluster::valid_node_name(node).map_err(|e| format!("--node-name: {e}"))?;
                }
                let queue_wait = self.queue_wait.map(Duration::try_from_secs_f64).transpose();
                let queue_wait = queue_wait.map_err(|e| format!("--queue-wait: {e}"))?;
                Some(crate::cluster::ClusterConfig {
                    url: url.clone(),
                    secret: self.cluster_secret()?,
                    access: self.nats_access()?,
                    node: self.node_name.clone(),
                    queue_wait,
                    local_runs: self.local_runs,
                })
            }
            None if self.cluster_only_given() => {
                return Err("--node-name, --queue-wait, --local-runs, the cluster secret and the NATS options \
                            need --cluster"
                    .into());
            }
            None => None,
        })
    }

    /// Whether a setting only cluster mode reads is given.
    #[cfg(feature = "cluster")]
    fn cluster_only_given(&self) -> bool {
        self.node_name.is_some()
            || self.queue_wait.is_some()
            || self.local_runs.is_some()
            || self.cluster_secret_file.is_some()
            || self.cluster_secret.is_some()
            || self.nats_credentials.is_some()
            || self.nats_nkey_seed_file.is_some()
            || self.nats_user.is_some()
            || self.nats_password.is_some()
            || self.nats_token.is_some()
            || self.nats_tls_ca.is_some()
            || self.nats_tls_cert.is_some()
            || self.nats_tls_key.is_some()
    }

    /// The cluster secret: from `cluster_secret_file`, `cluster_secret` or
    /// `$SANDLOT_CLUSTER_SECRET`, exactly one. Read now, before Landlock
    /// closes the file system.
    #[cfg(feature = "cluster")]
    fn cluster_secret(&self) -> Result<crate::cluster::ClusterSecret, String> {
        use crate::cluster::ClusterSecret;
        let env = std::env::var_os("SANDLOT_CLUSTER_SECRET")
            .map(|v| v.into_string().map_err(|_| "SANDLOT_CLUSTER_SECRET is not valid UTF-8".to_string()))
            .transpose()?;
        let from_file = match &self.cluster_secret_file {
            Some(path) => Some(secret_file(path, "cluster secret")?),
            None => None,
        };
        let given: Vec<String> = [from_file, self.cluster_secret.clone(), env].into_iter().flatten().collect();
        match given.as_slice() {
            [] => Err(format!(
                "cluster mode needs a cluster secret, the same on every node: every message between nodes is sealed \
                 with it, so a NATS client without it can neither read nor forge one. {}",
                ClusterSecret::how_to_make()
            )),
            [one] => ClusterSecret::from_text(one),
            _ => Err("the cluster secret is given more than once (--cluster-secret-file, cluster_secret in the \
                      config file, SANDLOT_CLUSTER_SECRET): give it one way"
                .into()),
        }
    }

    /// How this node authenticates to the NATS servers: at most one kind of
    /// credentials, read now (before Landlock), and TLS.
    #[cfg(feature = "cluster")]
    fn nats_access(&self) -> Result<crate::cluster::NatsAccess, String> {
        use crate::cluster::NatsCredentials;
        let env = |name: &str| {
            std::env::var_os(name)
                .map(|v| v.into_string().map_err(|_| format!("{name} is not valid UTF-8")))
                .transpose()
        };
        let password = match (self.nats_password.clone(), env("SANDLOT_NATS_PASSWORD")?) {
            (Some(_), Some(_)) => {
                return Err("the NATS password is given twice (nats_password, SANDLOT_NATS_PASSWORD)".into());
            }
            (one, other) => one.or(other),
        };
        let token = match (self.nats_token.clone(), env("SANDLOT_NATS_TOKEN")?) {
            (Some(_), Some(_)) => return Err("the NATS token is given twice (nats_token, SANDLOT_NATS_TOKEN)".into()),
            (one, other) => one.or(other),
        };
        let mut kinds = Vec::new();
        if let Some(path) = &self.nats_credentials {
            kinds.push(NatsCredentials::File(secret_file(path, "NATS credentials")?));
        }
        if let Some(path) = &self.nats_nkey_seed_file {
            kinds.push(NatsCredentials::Nkey(secret_file(path, "NATS nkey seed")?.trim().to_string()));
        }
        match (&self.nats_user, password) {
            (Some(user), Some(password)) => kinds.push(NatsCredentials::UserPassword(user.clone(), password)),
            (Some(user), None) => {
                return Err(format!(
                    "--nats-user {user} needs its password: nats_password in the config file, or SANDLOT_NATS_PASSWORD"
                ));
            }
            (None, Some(_)) => return Err("a NATS password needs its user (--nats-user)".into()),
            (None, None) => {}
        }
        kinds.extend(token.map(NatsCredentials::Token));
        if kinds.len() > 1 {
            return Err(
                "give one kind of NATS credentials: a credentials file, an nkey seed, a user and password, or a \
                        token"
                    .into(),
            );
        }
        let tls_client = match (&self.nats_tls_cert, &self.nats_tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("--nats-tls-cert and --nats-tls-key go together".into()),
        };
        for path in self.nats_tls_ca.iter().chain(tls_client.iter().flat_map(|(c, k)| [c, k])) {
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        }
        Ok(crate::cluster::NatsAccess { credentials: kinds.pop(), tls_ca: self.nats_tls_ca.clone(), tls_client })
    }

    /// Reads a config file's text (for `read`, and the fuzz target).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// A secret's file, read; a warning when others may read it too.
#[cfg(feature = "cluster")]
fn secret_file(path: &Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} from {}: {e}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!("{} (the {what}) may be read by other users of this machine: chmod 600 it", path.display());
    }
    Ok(text)
}

/// `$SANDLOT_DATA_DIR`, else `$XDG_DATA_HOME/sandlot`, else `~/.local/share/sandlot`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SANDLOT_DATA_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("sandlot")
}

/// The limits `--timeout SECONDS` and `--memory MIB` ask for.
pub fn limits(timeout: f64, memory: usize) -> Result<Limits, String> {
    let wall_clock = Duration::try_from_secs_f64(timeout).map_err(|e| format!("--timeout: {e}"))?;
    Ok(Limits::default().with_wall_clock(wall_clock).with_memory_bytes(memory.saturating_mul(1 << 20)))
}

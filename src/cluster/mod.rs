//! Cluster mode (`sandlot serve --cluster nats://...`): nodes that share
//! one-shot runs, and know of each other, through NATS JetStream: an
//! existing engine, no protocol of our own between nodes.
//!
//! - **Runs** (`runs.rs`): a one-shot run (ranna EXEC and `POST /v1/exec`,
//!   MCP `run_code`) is queued on the work-queue stream `SANDLOT_RUNS`. Every
//!   node pulls from one durable consumer, one run per pull and only while it
//!   has a free running slot, and acks a run as it starts it; a run whose
//!   ack is lost is handed out again only past its start deadline, so it is
//!   taken once, never run twice.
//!   Its output and end go back over core NATS to the node that holds the
//!   client, which feeds them to the face as if the run were its own.
//! - **Nodes**: each node puts its entry (`NodeInfo`) in the key-value bucket
//!   `sandlot_nodes` every `HEARTBEAT`; the bucket forgets entries older than
//!   `NODE_TTL`. A name is taken with `create`, so two live nodes never share
//!   one. Every node watches the bucket: the nodes it sees (`/metrics`,
//!   `/readyz`), and which went quiet (their runs end as `node-lost`).
//! - **Configuration** that must agree across nodes (version, tokens,
//!   limits) is in the bucket `sandlot_cluster`. A node whose own differs is
//!   refused at start, told what differs. Nodes refresh the entry; once every
//!   node has stopped for `CONFIG_TTL`, the next node to start sets it anew.
//! - **Trust**: the NATS server may admit clients that are not nodes. Every
//!   message, entry and object between nodes is sealed with the cluster
//!   secret (`seal.rs`), so such a client reads nothing and forges nothing;
//!   the nodes authenticate to NATS as the operator configures
//!   (`NatsAccess`), and a node warns when the server also admits clients
//!   without credentials.
//! - **Leaving**: a node that stops gracefully shares its last records,
//!   then says it is leaving in its entry, so the others answer for its
//!   sessions from the shared records at once.

mod datasets;
mod runs;
mod seal;

pub(crate) use datasets::SharedDatasets;
pub use seal::ClusterSecret;
use seal::{Seal, entry_place};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::registry::{Client, Registry, Started};
use crate::runtime::SessionOptions;
use crate::store::RunRecord;
use crate::sync::lock;

/// How often a node puts its entry in `sandlot_nodes`.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not seen for this long is lost: its runs end as `node-lost`.
pub const NODE_LOST_AFTER: Duration = Duration::from_secs(3);
/// How long the bucket keeps a node's entry after its last heartbeat; its
/// name is free again after this.
const NODE_TTL: Duration = Duration::from_secs(5);
/// How long the cluster's configuration outlives its last node.
const CONFIG_TTL: Duration = Duration::from_secs(30);
/// Messages a subscription holds for its reader at most (a run's frames
/// are at most 16 KiB each).
const SUBSCRIPTION_MESSAGES: usize = 8192;
const NODES_BUCKET: &str = "sandlot_nodes";
/// Finished runs' records (`store::RunRecord` JSON, placeholders included)
/// by run id, so any node answers for a run whose node is gone.
const RECORDS_BUCKET: &str = "sandlot_records";
/// Bytes the records bucket holds at most; past it the oldest go.
const RECORDS_BYTES: i64 = 1 << 30;
/// Records waiting to go to the bucket at most; past it a record stays on
/// its node only (and a warning says so).
const RECORDS_QUEUED: usize = 4096;
/// How long a record waits for the NATS server to come back before it is
/// given up (with a warning).
const RECORD_PATIENCE: Duration = Duration::from_secs(60);
const CONFIG_BUCKET: &str = "sandlot_cluster";
const CONFIG_KEY: &str = "config";

/// How long a stopping node waits for its last records to reach the
/// cluster before it says it is leaving.
const LEAVE_PATIENCE: Duration = Duration::from_secs(5);

/// How a node joins a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The NATS servers, comma-separated (`nats://host:4222,nats://other:4222`).
    pub url: String,
    /// The secret every message between nodes is sealed with; the same on
    /// every node.
    pub secret: ClusterSecret,
    /// How this node authenticates to the NATS servers, and checks them.
    pub access: NatsAccess,
    /// This node's name: letters, digits, `-` and `_`, at most 64; `None`:
    /// `default_node_name`.
    pub node: Option<String>,
    /// How long a one-shot run may wait in the queue for a node with room
    /// before it ends as `timeout`; `None`: its wall clock. At most that, and
    /// at most 20 s (`runs::MAX_QUEUE_WAIT`).
    pub queue_wait: Option<Duration>,
    /// A one-shot run a client sends here runs here, without the queue,
    /// while fewer than this many runs go here and no run waits in the
    /// queue; `None`: this machine's cores. 0: every one-shot run goes
    /// through the queue.
    pub local_runs: Option<usize>,
}

/// How a node authenticates to the NATS servers (at most one kind of
/// credentials), and the TLS it uses. Files are read when the settings are
/// (the credentials) or at each connection (TLS: `files_read`), so nothing
/// secret goes on a command line.
#[derive(Clone, Default)]
pub struct NatsAccess {
    pub credentials: Option<NatsCredentials>,
    /// The certificate authority the servers' certificates are checked
    /// against; `None`: the system's. Given, or with a client certificate,
    /// TLS is required.
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate and key (PEM), for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

/// Credentials for the NATS servers.
#[derive(Clone)]
pub enum NatsCredentials {
    /// A `.creds` file's text (a user JWT and its nkey seed).
    File(String),
    /// An nkey seed (`SU...`).
    Nkey(String),
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for NatsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials = self.credentials.as_ref().map(|c| match c {
            NatsCredentials::File(_) => "credentials file".to_string(),
            NatsCredentials::Nkey(_) => "nkey".to_string(),
            NatsCredentials::UserPassword(user, _) => format!("user {user}"),
            NatsCredentials::Token(_) => "token".to_string(),
        });
        f.debug_struct("NatsAccess")
            .field("credentials", &credentials)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

impl NatsAccess {
    /// Whether TLS is asked for (the URL can ask for it too: `tls://`).
    fn tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_client.is_some()
    }

    /// The connect options for these credentials and TLS (none given: none).
    fn options(&self, with_credentials: bool) -> Result<async_nats::ConnectOptions, Error> {
        let mut options = async_nats::ConnectOptions::new();
        if with_credentials && let Some(credentials) = &self.credentials {
            options = match credentials {
                NatsCredentials::File(text) => options.credentials(text).map_err(|e| {
                    Error::Cluster(format!(
                        "the NATS credentials file is not valid: {e}; give the .creds file nsc made"
                    ))
                })?,
                NatsCredentials::Nkey(seed) => options.nkey(seed.clone()),
                NatsCredentials::UserPassword(user, password) => {
                    options.user_and_password(user.clone(), password.clone())
                }
                NatsCredentials::Token(token) => options.token(token.clone()),
            };
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if with_credentials && let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.tls()))
    }

    /// The files read at each connection to the NATS servers (TLS), which
    /// the server's Landlock rules must leave readable.
    pub fn files_read(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.tls_ca.iter().cloned().collect();
        if let Some((cert, key)) = &self.tls_client {
            files.extend([cert.clone(), key.clone()]);
        }
        if self.tls_ca.is_none() {
            // The system's certificate authorities (rustls-native-certs looks
            // here), for a server that requires TLS with a public certificate,
            // and the folders their links point into.
            let system = ["/etc/ssl", "/etc/pki", "/usr/lib/ssl", "/usr/share/ca-certificates", "/etc/ca-certificates"];
            let mut folders: std::collections::BTreeSet<PathBuf> =
                system.iter().map(PathBuf::from).filter(|p| p.exists()).collect();
            for entry in std::fs::read_dir("/etc/ssl/certs").into_iter().flatten().flatten() {
                if let Ok(target) = std::fs::canonicalize(entry.path())
                    && let Some(folder) = target.parent()
                {
                    folders.insert(folder.to_path_buf());
                }
            }
            files.extend(folders);
        }
        files
    }
}

impl ClusterConfig {
    /// The default name of a node: the host's name and the port it listens on.
    pub fn default_node_name(port: u16) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String =
            host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(48).collect();
        format!("{}-{port}", if host.is_empty() { "node" } else { &host })
    }
}

/// Checks a node name: it is a NATS subject token and a key.
pub fn valid_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("the node name {name:?} is not valid: use 1 to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

/// The four bytes that start the ids of the runs and sessions made on
/// `node` (a digest of its name), so any node can tell where one lives.
pub fn tag_of(node: &str) -> [u8; 4] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(node.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

/// How a forwarded request names the client it came from (`client_of`
/// reads it back): its share and rate apply on the node that answers.
pub(crate) fn client_text(client: &Client) -> String {
    use base64::Engine as _;
    match client {
        Client::Local => "local".into(),
        Client::Token(digest) => format!("token:{}", base64::engine::general_purpose::STANDARD.encode(digest)),
        Client::Address(ip) => format!("address:{ip}"),
    }
}

/// The client `client_text` named; `None` for anything else.
pub(crate) fn client_of(text: &str) -> Option<Client> {
    use base64::Engine as _;
    match text.split_once(':') {
        None if text == "local" => Some(Client::Local),
        Some(("token", digest)) => {
            let digest = base64::engine::general_purpose::STANDARD.decode(digest).ok()?;
            Some(Client::Token(digest.try_into().ok()?))
        }
        Some(("address", ip)) => ip.parse().ok().map(Client::Address),
        _ => None,
    }
}

/// Answers requests forwarded from other nodes: the request's bytes and
/// the client who sent it to the first node (`Cluster::forward`; `None`
/// when unreadable) in, the reply out. Only requests sealed with the
/// cluster secret reach it, so the client is the one the sending node
/// named.
pub type Handler = Arc<
    dyn Fn(bytes::Bytes, Option<Client>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bytes::Bytes> + Send>>
        + Send
        + Sync,
>;

/// Forwarded requests a node answers at once at most; past it they wait.
const FORWARDED_AT_ONCE: usize = 256;
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// What must agree across a cluster's nodes, as each node states it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// The sandlot version.
    pub version: String,
    /// A digest of the accepted tokens (none: an empty list's).
    pub tokens: String,
    /// The limits of every run.
    pub limits: String,
    /// New runs one client may start per second.
    pub runs_per_second: String,
}

impl Agreement {
    /// The fields in which `self` (this node) differs from `cluster`.
    fn differences(&self, cluster: &Agreement) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, mine: &str, theirs: &str| {
            if mine != theirs {
                out.push(format!("{name}: this node has {mine}, the cluster {theirs}"));
            }
        };
        check("version", &self.version, &cluster.version);
        check("tokens", &self.tokens, &cluster.tokens);
        check("limits", &self.limits, &cluster.limits);
        check("runs per second per client", &self.runs_per_second, &cluster.runs_per_second);
        out
    }
}

/// A node's entry in `sandlot_nodes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct NodeInfo {
    /// Running slots in all, and free.
    capacity: usize,
    free: usize,
    /// The node is stopping: it answers nothing more (`Cluster::leave`).
    #[serde(default)]
    leaving: bool,
}

/// A node as this one last saw it.
struct Seen {
    at: Instant,
    /// When its last heartbeat was sealed, by its clock: an older one
    /// (a replay, or history read again) changes nothing.
    sealed_at: u64,
    info: NodeInfo,
}

/// This node's membership of a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    seal: Arc<Seal>,
    node: String,
    /// Every node's last heartbeat seen, this one's included.
    nodes: Mutex<HashMap<String, Seen>>,
    /// Runs queued at the last look.
    queue_depth: AtomicU64,
    records: kv::Store,
    /// Records on their way to `records`: queued (the registry's sink) and
    /// being put.
    records_queued: tokio::sync::mpsc::Sender<RunRecord>,
    records_putting: Arc<AtomicUsize>,
    nodes_bucket: kv::Store,
    /// Set by `leave`: the heartbeat stops.
    leaving: AtomicBool,
    datasets: SharedDatasets,
    runs: runs::Runs,
}

impl Cluster {
    /// Joins the cluster at `config.url` as `config.node` (by default named
    /// after the host and `port`, the port it listens on): connects, checks
    /// that this node's `agreement` matches the cluster's and that the name
    /// is free, then starts taking queued runs into `registry` (with
    /// `options` as their sessions' options).
    pub async fn join(
        config: &ClusterConfig,
        port: u16,
        agreement: Agreement,
        registry: Registry,
        options: SessionOptions,
        records_for: Duration,
    ) -> Result<Cluster, Error> {
        let node = config.node.clone().unwrap_or_else(|| ClusterConfig::default_node_name(port));
        valid_node_name(&node).map_err(Error::Cluster)?;
        let seal = Arc::new(Seal::new(&config.secret, &node, registry.metrics().clone()));
        let client = config
            .access
            .options(true)?
            .name(format!("sandlot {node}"))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            // Messages held per subscription for a reader that is behind;
            // past it NATS drops them (a run's follower then sees the gap).
            .subscription_capacity(SUBSCRIPTION_MESSAGES)
            .connect(config.url.as_str())
            .await
            .map_err(|e| {
                let auth = if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation {
                    "; check the NATS credentials this node was given (--nats-credentials, --nats-nkey-seed-file, \
                     --nats-user and SANDLOT_NATS_PASSWORD, or SANDLOT_NATS_TOKEN)"
                } else if e.kind() == async_nats::ConnectErrorKind::Tls || e.to_string().contains("certificate") {
                    "; check --nats-tls-ca (the authority that signed the server's certificate) and the client \
                     certificate (--nats-tls-cert, --nats-tls-key)"
                } else {
                    "; is nats-server running (with -js)?"
                };
                Error::Cluster(format!("could not reach the cluster's NATS server at {}: {e}{auth}", config.url))
            })?;
        let js = jetstream::new(client.clone());
        let config_bucket = bucket(&js, CONFIG_BUCKET, CONFIG_TTL).await?;
        let text = serde_json::to_vec(&agreement).expect("an agreement is JSON");
        check_agreement(&config_bucket, &seal, &agreement, &text).await?;
        let nodes_bucket = bucket(&js, NODES_BUCKET, NODE_TTL).await?;
        take_name(&nodes_bucket, &seal, &node, &registry).await?;
        registry.set_id_tag(tag_of(&node));
        let records = bucket_of(&js, RECORDS_BUCKET, records_for, RECORDS_BYTES).await?;
        let (sink, queued) = tokio::sync::mpsc::channel(RECORDS_QUEUED);
        registry.set_record_sink(sink.clone());
        let putting = Arc::new(AtomicUsize::new(0));
        let max_payload = client.server_info().max_payload;
        tokio::spawn(share_records(queued, records.clone(), seal.clone(), putting.clone(), max_payload));
        let datasets = SharedDatasets::open(&js, seal.clone()).await?;
        let (runs, subscriptions) =
            runs::Runs::new(&js, &client, seal.clone(), &node, registry.clone(), options, config).await?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                client,
                seal,
                node: node.clone(),
                nodes: Mutex::new(HashMap::new()),
                queue_depth: AtomicU64::new(0),
                records,
                records_queued: sink,
                records_putting: putting,
                nodes_bucket: nodes_bucket.clone(),
                leaving: AtomicBool::new(false),
                datasets,
                runs,
            }),
        };
        runs::Runs::start(&cluster, subscriptions);
        tokio::spawn(heartbeat(Arc::downgrade(&cluster.inner), nodes_bucket.clone(), config_bucket, text, registry));
        tokio::spawn(watch_nodes(Arc::downgrade(&cluster.inner), nodes_bucket));
        warn_if_anonymous(&config.url, &config.access).await;
        tracing::info!(node = %node, url = %config.url, "joined the cluster");
        Ok(cluster)
    }

    /// Leaves the cluster as a node stopping gracefully does, once its runs
    /// have ended: its last records reach the bucket (`LEAVE_PATIENCE` at
    /// most), then its entry says it is leaving, so the other nodes answer
    /// for its sessions from those records at once instead of asking it.
    pub async fn leave(&self) {
        let inner = &self.inner;
        inner.leaving.store(true, Ordering::Relaxed);
        let given_up = Instant::now() + LEAVE_PATIENCE;
        let drained = || {
            inner.records_queued.capacity() == inner.records_queued.max_capacity()
                && inner.records_putting.load(Ordering::Relaxed) == 0
        };
        while !drained() && Instant::now() < given_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !drained() {
            tracing::warn!("stopping before every record reached the cluster: the others will not answer for those");
        }
        let info = NodeInfo { leaving: true, ..NodeInfo::default() };
        let value = inner.seal.seal(&entry_place(NODES_BUCKET, &inner.node), &serde_json::to_vec(&info).expect("JSON"));
        match tokio::time::timeout(Duration::from_secs(2), inner.nodes_bucket.put(&inner.node, value)).await {
            Ok(Ok(_)) => tracing::info!(node = %inner.node, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not tell the cluster this node is leaving"),
            Err(_) => tracing::warn!("could not tell the cluster this node is leaving within 2 s"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.client.flush()).await;
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Nodes seen within `NODE_LOST_AFTER`, this one included.
    pub fn nodes_seen(&self) -> usize {
        let nodes = lock(&self.inner.nodes);
        nodes.values().filter(|seen| seen.at.elapsed() < NODE_LOST_AFTER && !seen.info.leaving).count()
    }

    /// Running slots free and in all across the nodes seen.
    pub fn slots(&self) -> (usize, usize) {
        let nodes = lock(&self.inner.nodes);
        let alive = nodes.values().filter(|seen| seen.at.elapsed() < NODE_LOST_AFTER && !seen.info.leaving);
        alive.fold((0, 0), |(free, all), seen| (free + seen.info.free, all + seen.info.capacity))
    }

    /// Runs waiting in the queue at the last look (every `HEARTBEAT`).
    pub fn queue_depth(&self) -> u64 {
        self.inner.queue_depth.load(Ordering::Relaxed)
    }

    /// Whether this node reaches the NATS server now.
    pub fn connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Whether `node` is alive as far as this node can tell: seen within
    /// `NODE_LOST_AFTER` of this node's own last heartbeat (so a node that
    /// lost its own connection does not call every other node lost), and
    /// not leaving.
    fn alive(&self, node: &str) -> bool {
        let nodes = lock(&self.inner.nodes);
        let Some(seen) = nodes.get(node).filter(|seen| !seen.info.leaving) else { return false };
        let own = nodes.get(&self.inner.node).map_or_else(Instant::now, |own| own.at);
        own.saturating_duration_since(seen.at) < NODE_LOST_AFTER
    }

    /// The node a run or session id names, when it is another live node
    /// (`None` for this node's own ids, and for nodes gone).
    pub(crate) fn owner_of(&self, id: &str) -> Option<String> {
        let id = uuid::Uuid::parse_str(id).ok()?;
        let tag: [u8; 4] = id.as_bytes()[..4].try_into().ok()?;
        if tag == tag_of(&self.inner.node) {
            return None;
        }
        let node = lock(&self.inner.nodes).keys().find(|name| tag_of(name) == tag).cloned()?;
        self.alive(&node).then_some(node)
    }

    /// The cluster's datasets.
    pub(crate) fn datasets(&self) -> &SharedDatasets {
        &self.inner.datasets
    }

    /// The record of a finished run, as its node shared it, if the bucket
    /// has it.
    pub(crate) async fn record(&self, id: &str) -> Option<RunRecord> {
        uuid::Uuid::parse_str(id).ok()?;
        let found = tokio::time::timeout(Duration::from_secs(5), self.inner.records.get(id)).await;
        match found {
            Ok(Ok(Some(sealed))) => {
                let opened = self.inner.seal.open(&entry_place(RECORDS_BUCKET, id), &sealed).ok()?;
                serde_json::from_slice(&opened.body).ok()
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read a run's record from the cluster");
                None
            }
            Err(_) => {
                tracing::warn!("the cluster did not give a run's record within 5 s");
                None
            }
        }
    }

    /// Sends a request of `kind` to `node` and waits for its answer; `client`
    /// names who asked (its share and rate apply there). `Ok(None)`: nobody
    /// answers for `node` any more (it stopped): answer from the records.
    pub(crate) async fn forward(
        &self,
        node: &str,
        kind: &str,
        client: &Client,
        request: bytes::Bytes,
    ) -> Result<Option<bytes::Bytes>, Error> {
        let largest = self.inner.client.server_info().max_payload;
        if request.len() + 1024 + seal::OVERHEAD > largest {
            return Err(Error::RequestTooLarge(format!(
                "this request is {} KiB, and the session is on node {node}: requests to another node may be {} KiB at \
                 most (the NATS server's max_payload); send it to {node} itself",
                request.len() >> 10,
                largest.saturating_sub(1024) >> 10
            )));
        }
        // Who asked goes inside the sealed request: only a node can name a client.
        let mut body = client_text(client).into_bytes();
        body.push(b'\n');
        body.extend_from_slice(&request);
        let subject = format!("sandlot.node.{node}.{kind}");
        let sealed = self.inner.seal.seal(&subject, &body);
        let nonce = seal::nonce_of(&sealed).expect("a sealed message has a nonce");
        let asked = self.inner.client.request(subject, sealed);
        let reply = match tokio::time::timeout(FORWARD_TIMEOUT, asked).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                tracing::debug!(node, "no node answers for {node} any more; answering from the cluster's records");
                return Ok(None);
            }
            Ok(Err(e)) => return Err(Error::Cluster(format!("node {node}, which has it, did not answer: {e}"))),
            Err(_) => return Err(Error::Cluster(format!("node {node}, which has it, did not answer in time"))),
        };
        match self.inner.seal.open_once(&seal::reply_place(&nonce), &reply.payload) {
            Ok(opened) => Ok(Some(opened.body.into())),
            Err(refused) => Err(Error::Cluster(format!(
                "the answer from node {node} was refused ({refused}); are both nodes given the same cluster secret?"
            ))),
        }
    }

    /// Answers the requests of `kind` other nodes forward here with `handler`.
    pub(crate) async fn serve(&self, kind: &str, handler: Handler) -> Result<(), Error> {
        let subject = format!("sandlot.node.{}.{kind}", self.inner.node);
        let mut requests = self
            .inner
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| Error::Cluster(format!("could not subscribe to {subject}: {e}")))?;
        let (client, seal) = (self.inner.client.clone(), self.inner.seal.clone());
        let at_once = Arc::new(tokio::sync::Semaphore::new(FORWARDED_AT_ONCE));
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(reply) = request.reply else { continue };
                // A request not sealed by a node is not answered at all.
                let Ok(opened) = seal.open_once(&subject, &request.payload) else { continue };
                let Ok(permit) = at_once.clone().acquire_owned().await else { return };
                let (asker, body) = match opened.body.iter().position(|&b| b == b'\n') {
                    Some(end) => (
                        std::str::from_utf8(&opened.body[..end]).ok().and_then(client_of),
                        bytes::Bytes::copy_from_slice(&opened.body[end + 1..]),
                    ),
                    None => (None, bytes::Bytes::new()),
                };
                let (handler, client, seal) = (handler.clone(), client.clone(), seal.clone());
                tokio::spawn(async move {
                    let answer = handler(body, asker).await;
                    let answer = seal.seal(&seal::reply_place(&opened.nonce), &answer);
                    if let Err(e) = client.publish(reply, answer).await {
                        tracing::warn!(error = %e, "could not answer a request forwarded from another node");
                    }
                    drop(permit);
                });
            }
        });
        Ok(())
    }

    /// Starts a one-shot run on whichever node has room: queued for the
    /// cluster, its events fed back here. `Err(program)` when it should run
    /// here: this node has a core to spare (`ClusterConfig::local_runs`),
    /// or the run cannot go through the queue (larger than the NATS server's
    /// largest message, or with an open standard input): the caller runs it.
    pub(crate) async fn start(
        &self,
        registry: &Registry,
        client: &Client,
        face: crate::metrics::Face,
        language: crate::language::Language,
        program: crate::program::Program,
        options: &SessionOptions,
    ) -> Result<Result<Started, crate::program::Program>, Error> {
        let started = self.inner.runs.submit(self, registry, client, face, language, program, options).await;
        if let Ok(started) = &started {
            registry.metrics().routed(started.is_ok());
        }
        started
    }
}

/// The key-value bucket `name`, made if missing, whose entries live `ttl`.
/// Its stream is made here as the client's `create_key_value` would make
/// it: that call first asks for account fields that Debian's nats-server
/// (2.9) does not send.
async fn bucket(js: &jetstream::Context, name: &str, ttl: Duration) -> Result<kv::Store, Error> {
    bucket_of(js, name, ttl, -1).await
}

/// `bucket`, holding `max_bytes` at most (-1: no limit); past it the oldest
/// entries go.
async fn bucket_of(js: &jetstream::Context, name: &str, ttl: Duration, max_bytes: i64) -> Result<kv::Store, Error> {
    let stream = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        max_bytes,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: if max_bytes < 0 {
            jetstream::stream::DiscardPolicy::New
        } else {
            jetstream::stream::DiscardPolicy::Old
        },
        ..Default::default()
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::Cluster(format!("could not open the key-value bucket {name}: {e}; is JetStream on (nats-server -js)?"))
    };
    js.get_or_create_stream(stream).await.map_err(|e| unreachable(&e))?;
    js.get_key_value(name).await.map_err(|e| unreachable(&e))
}

/// Puts the records of finished runs in the records bucket, one by one, in
/// order, each retried while the NATS server is away for up to
/// `RECORD_PATIENCE`. A record larger than a message goes without its
/// placeholders (marked so). `putting` is 1 while one is on its way.
async fn share_records(
    mut queued: tokio::sync::mpsc::Receiver<RunRecord>,
    bucket: kv::Store,
    seal: Arc<Seal>,
    putting: Arc<AtomicUsize>,
    max_payload: usize,
) {
    while let Some(mut record) = queued.recv().await {
        putting.store(1, Ordering::Relaxed);
        let mut json = serde_json::to_vec(&record).expect("a record is JSON");
        if json.len() + 1024 + seal::OVERHEAD > max_payload {
            record.drop_placeholders();
            json = serde_json::to_vec(&record).expect("a record is JSON");
        }
        let sealed = seal.seal(&entry_place(RECORDS_BUCKET, &record.id), &json);
        let given_up = Instant::now() + RECORD_PATIENCE;
        loop {
            match bucket.put(&record.id, sealed.clone()).await {
                Ok(_) => break,
                Err(e) if Instant::now() < given_up => {
                    tracing::debug!(error = %e, "could not share a run's record yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::warn!(run = %record.id, error = %e, "could not share a run's record with the cluster");
                    break;
                }
            }
        }
        putting.store(0, Ordering::Relaxed);
    }
}

/// Sets the cluster's agreement to this node's if none is set, else checks
/// that they match.
async fn check_agreement(bucket: &kv::Store, seal: &Seal, agreement: &Agreement, text: &[u8]) -> Result<(), Error> {
    let place = entry_place(CONFIG_BUCKET, CONFIG_KEY);
    for _ in 0..3 {
        match bucket.create(CONFIG_KEY, seal.seal(&place, text)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::Cluster(format!("could not read the cluster's configuration: {e}"))),
        }
        let Some(theirs) = bucket
            .get(CONFIG_KEY)
            .await
            .map_err(|e| Error::Cluster(format!("could not read the cluster's configuration: {e}")))?
        else {
            continue; // expired in between: set it
        };
        let theirs = seal.open(&place, &theirs).map_err(|_| {
            Error::Cluster(format!(
                "the cluster's configuration is not sealed with this node's cluster secret, so it does not join: give \
                 it the same cluster secret as the other nodes (if every node was given a new secret, the cluster \
                 forgets the old configuration {} s after its last node stops)",
                CONFIG_TTL.as_secs()
            ))
        })?;
        let theirs: Agreement = serde_json::from_slice(&theirs.body).map_err(|e| {
            Error::Cluster(format!("the cluster's configuration is unreadable ({e}); is it another version's?"))
        })?;
        let differences = agreement.differences(&theirs);
        if differences.is_empty() {
            return Ok(());
        }
        return Err(Error::Cluster(format!(
            "this node's configuration differs from the cluster's, so it does not join: {}. Start it with the same \
             tokens and limits as the other nodes (or, to change them for the whole cluster, stop every node; the \
             cluster forgets its configuration {} s after its last node stops)",
            differences.join("; "),
            CONFIG_TTL.as_secs()
        )));
    }
    Err(Error::Cluster("could not settle the cluster's configuration; try again".into()))
}

/// Takes `node` in the nodes bucket, waiting up to `NODE_TTL` for a dead
/// node of that name to be forgotten (one that left is replaced at once).
async fn take_name(bucket: &kv::Store, seal: &Seal, node: &str, registry: &Registry) -> Result<(), Error> {
    let info = node_info(seal, node, registry);
    let deadline = Instant::now() + NODE_TTL + Duration::from_secs(1);
    loop {
        match bucket.create(node, info.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists && Instant::now() < deadline => {
                if let Ok(Some(entry)) = bucket.entry(node).await
                    && let Ok(opened) = seal.open(&entry_place(NODES_BUCKET, node), &entry.value)
                    && serde_json::from_slice::<NodeInfo>(&opened.body).is_ok_and(|info| info.leaving)
                    && bucket.update(node, info.clone(), entry.revision).await.is_ok()
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                return Err(Error::Cluster(format!(
                    "a node named {node} is in the cluster already; give this one another name (--node-name)"
                )));
            }
            Err(e) => return Err(Error::Cluster(format!("could not join as {node}: {e}"))),
        }
    }
}

/// This node's entry in the nodes bucket, sealed.
fn node_info(seal: &Seal, node: &str, registry: &Registry) -> bytes::Bytes {
    let (free, capacity) = registry.running_slots();
    let info = serde_json::to_vec(&NodeInfo { capacity, free, leaving: false }).expect("node info is JSON");
    seal.seal(&entry_place(NODES_BUCKET, node), &info)
}

/// Puts this node's entry, and the agreement, every `HEARTBEAT`; notes the
/// queue's depth.
async fn heartbeat(
    inner: std::sync::Weak<Inner>,
    nodes: kv::Store,
    config: kv::Store,
    agreement: Vec<u8>,
    registry: Registry,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.leaving.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = nodes.put(&inner.node, node_info(&inner.seal, &inner.node, &registry)).await {
            tracing::warn!(error = %e, "could not send this node's heartbeat to the cluster");
        }
        let _ = config.put(CONFIG_KEY, inner.seal.seal(&entry_place(CONFIG_BUCKET, CONFIG_KEY), &agreement)).await;
        if let Ok(depth) = inner.runs.queue_depth().await {
            inner.queue_depth.store(depth, Ordering::Relaxed);
        }
        let cluster = Cluster { inner };
        registry.metrics().set_cluster(cluster.nodes_seen(), cluster.queue_depth(), cluster.slots().0);
    }
}

/// Follows the nodes bucket: every heartbeat seen, every node gone.
async fn watch_nodes(inner: std::sync::Weak<Inner>, bucket: kv::Store) {
    loop {
        // With history: the nodes up now are known at once (an entry is at
        // most `NODE_TTL` old).
        let mut watch = match bucket.watch_with_history(">").await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "could not watch the cluster's nodes; retrying");
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Some(inner) = inner.upgrade() else { return };
            let Ok(entry) = entry else { break };
            // Nodes never delete their entries: a delete is no node's, and
            // changes nothing. A heartbeat no later than the last one seen
            // of its node changes nothing either (a replayed one does not
            // keep a node that is gone alive).
            let place = entry_place(NODES_BUCKET, &entry.key);
            if entry.operation != kv::Operation::Put {
                inner.seal.refuse_unsealed(&place);
                continue;
            }
            let Ok(opened) = inner.seal.open(&place, &entry.value) else {
                continue;
            };
            let info: NodeInfo = serde_json::from_slice(&opened.body).unwrap_or_default();
            let mut nodes = lock(&inner.nodes);
            if nodes.get(&entry.key).is_some_and(|seen| seen.sealed_at >= opened.at) {
                continue;
            }
            // A node that left stays known as leaving, so nothing older of it counts.
            nodes.insert(entry.key, Seen { at: Instant::now(), sealed_at: opened.at, info });
            // Entries of nodes long gone are dropped, so the map stays as
            // large as the cluster.
            nodes.retain(|_, seen| seen.at.elapsed() < NODE_TTL * 4);
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Warns, loudly, when the NATS server at `url` admits a client without
/// credentials (an anonymous connection is tried; with no credentials of
/// its own, this node's own connection showed it already).
async fn warn_if_anonymous(url: &str, access: &NatsAccess) {
    let admitted = match &access.credentials {
        None if access.tls_client.is_none() => true,
        _ => match access.options(false) {
            Ok(options) => {
                let probe =
                    options.name("sandlot anonymous probe").connection_timeout(Duration::from_secs(5)).connect(url);
                match probe.await {
                    Ok(anonymous) => {
                        drop(anonymous);
                        true
                    }
                    Err(_) => false,
                }
            }
            Err(_) => false,
        },
    };
    if admitted {
        tracing::warn!(
            url = %url,
            "THE CLUSTER'S NATS SERVER ADMITS CLIENTS WITHOUT CREDENTIALS: anyone who reaches it can delete the \
             cluster's queue and buckets, fill them, and see which nodes talk (what they say is sealed with the \
             cluster secret, so they can neither read nor forge it). Give nats-server an authorization block (users \
             or nkeys) and TLS, and give the nodes their credentials (the README's cluster set-up shows how)"
        );
    }
}

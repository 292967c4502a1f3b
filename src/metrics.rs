//! What `GET /metrics` shows (CONTRACT face 7), in Prometheus's text format
//! through the `prometheus-client` crate.
//!
//! Nothing here takes a lock on a run's path: every label combination is made
//! when `Metrics` is, and each counter, gauge or histogram is a handle of
//! atomics kept in an array indexed by its labels. The crate's own histogram
//! takes a lock per observation, so histograms are `AtomicHistogram`, encoded
//! through the crate's encoder like its own. Gauges that are a count of
//! something the registry already holds (sessions) are read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::language::Language;
use crate::run::EndReason;

/// Where a run, a connection or a refusal came from: the `face` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Face {
    /// ranna's WebSocket and REST face.
    Ranna,
    /// The runtime server's actions socket.
    Actions,
    /// The processor lifecycle socket.
    Processor,
    /// Hanami's dataset upload socket.
    Datasets,
    /// Hanami's direct-IO socket.
    DirectIo,
    /// The MCP face.
    Mcp,
    /// A program embedding the library (and the tests).
    #[default]
    Library,
}

impl Face {
    pub const ALL: [Face; 7] =
        [Face::Ranna, Face::Actions, Face::Processor, Face::Datasets, Face::DirectIo, Face::Mcp, Face::Library];

    pub fn as_str(self) -> &'static str {
        match self {
            Face::Ranna => "ranna",
            Face::Actions => "actions",
            Face::Processor => "processor",
            Face::Datasets => "datasets",
            Face::DirectIo => "direct-io",
            Face::Mcp => "mcp",
            Face::Library => "library",
        }
    }
}

/// Why a request was turned away: the `cause` label of `sandlot_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server's running slots were all taken.
    Busy,
    /// The client had its share of the running slots.
    ClientShare,
    /// The client started runs faster than its rate.
    Rate,
    /// No token, or a wrong one.
    Token,
    /// The connection caps (in total or per address).
    Connections,
    /// A Host or Origin header the server does not answer to.
    HostOrigin,
    /// A message or body over the size limit.
    TooLarge,
    /// The server was stopping.
    ShuttingDown,
    /// The run's language was still being prepared.
    Preparing,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::Busy,
        Refusal::ClientShare,
        Refusal::Rate,
        Refusal::Token,
        Refusal::Connections,
        Refusal::HostOrigin,
        Refusal::TooLarge,
        Refusal::ShuttingDown,
        Refusal::Preparing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::ClientShare => "client-share",
            Refusal::Rate => "rate",
            Refusal::Token => "token",
            Refusal::Connections => "connections",
            Refusal::HostOrigin => "host-origin",
            Refusal::TooLarge => "too-large",
            Refusal::ShuttingDown => "shutting-down",
            Refusal::Preparing => "preparing",
        }
    }

    /// The refusal an error of the registry stands for, if it is one.
    pub(crate) fn of(error: &crate::Error) -> Option<Refusal> {
        use crate::Error;
        match error {
            Error::Busy { .. } => Some(Refusal::Busy),
            Error::ClientBusy { .. } => Some(Refusal::ClientShare),
            Error::RateLimited { .. } => Some(Refusal::Rate),
            Error::ShuttingDown => Some(Refusal::ShuttingDown),
            _ => None,
        }
    }
}

/// Upper bounds of the time histograms, in seconds: from a warm start
/// (a fraction of a millisecond) to the longest time limit.
const TIME_BUCKETS: [f64; 16] =
    [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

/// A histogram of durations made of atomics alone: an observation is two
/// relaxed adds, never a lock. A scrape may see an observation's bucket
/// before its sum; Prometheus tolerates that.
#[derive(Clone, Debug, Default)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug, Default)]
struct HistogramInner {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; TIME_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = TIME_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(TIME_BUCKETS.len());
        let inner = &self.inner;
        inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        inner.sum_nanos.fetch_add(duration.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Each bucket's own count: the encoder adds them up into the
        // cumulative `le` series.
        let buckets: Vec<(f64, u64)> = TIME_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.inner.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type Labels = Vec<(&'static str, &'static str)>;

const LANGUAGES: usize = Language::ALL.len();
const FACES: usize = Face::ALL.len();
const REASONS: usize = EndReason::ALL.len();

fn language_index(language: Language) -> usize {
    Language::ALL.iter().position(|&l| l == language).expect("every language is in Language::ALL")
}

fn face_index(face: Face) -> usize {
    Face::ALL.iter().position(|&f| f == face).expect("every face is in Face::ALL")
}

fn reason_index(reason: EndReason) -> usize {
    EndReason::ALL.iter().position(|&r| r == reason).expect("every reason is in EndReason::ALL")
}

fn is_limit(reason: EndReason) -> bool {
    matches!(
        reason,
        EndReason::Timeout | EndReason::Memory | EndReason::Fuel | EndReason::OutputLimit | EndReason::ScratchLimit
    )
}

/// The server's metrics. Cheap to share (`Arc`); every update is lock-free.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    /// `runs[language][face][reason]`.
    runs: Vec<Counter>,
    run_seconds: Vec<AtomicHistogram>,
    cold_start_seconds: Vec<AtomicHistogram>,
    kills: Counter,
    limit_hits: Vec<Counter>,
    upload_bytes: Counter,
    records_unsaved: Counter,
    connections: Vec<Gauge>,
    refusals: Vec<Counter>,
    sessions_running: Gauge,
    sessions_live: Gauge,
    cluster_nodes: Gauge,
    cluster_queued: Gauge,
    cluster_free_slots: Gauge,
    /// Cluster mode: one-shot runs of this node's clients run here, and queued.
    cluster_routed: [Counter; 2],
    /// Cluster mode: messages from the NATS bus refused, by why.
    cluster_refused: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("sandlot");
        let runs_family = Family::<Labels, Counter>::default();
        let run_seconds_family = Family::<Labels, AtomicHistogram>::default();
        let cold_family = Family::<Labels, AtomicHistogram>::default();
        let mut runs = Vec::with_capacity(LANGUAGES * FACES * REASONS);
        let mut run_seconds = Vec::with_capacity(LANGUAGES * FACES);
        let mut cold_start_seconds = Vec::with_capacity(LANGUAGES * FACES);
        for language in Language::ALL {
            for face in Face::ALL {
                let labels = vec![("language", language.name()), ("face", face.as_str())];
                run_seconds.push(run_seconds_family.get_or_create_owned(&labels));
                cold_start_seconds.push(cold_family.get_or_create_owned(&labels));
                for reason in EndReason::ALL {
                    let mut labels = labels.clone();
                    labels.push(("reason", reason.as_str()));
                    runs.push(runs_family.get_or_create_owned(&labels));
                }
            }
        }
        let limit_family = Family::<Labels, Counter>::default();
        let limit_hits = EndReason::ALL
            .iter()
            .map(|reason| limit_family.get_or_create_owned(&vec![("limit", reason.as_str())]))
            .collect();
        let connection_family = Family::<Labels, Gauge>::default();
        let connections = Face::ALL
            .iter()
            .map(|face| connection_family.get_or_create_owned(&vec![("face", face.as_str())]))
            .collect();
        let refusal_family = Family::<Labels, Counter>::default();
        let refusals = Refusal::ALL
            .iter()
            .map(|cause| refusal_family.get_or_create_owned(&vec![("cause", cause.as_str())]))
            .collect();
        let session_family = Family::<Labels, Gauge>::default();
        let sessions_running = session_family.get_or_create_owned(&vec![("state", "running")]);
        let sessions_live = session_family.get_or_create_owned(&vec![("state", "live")]);
        let (kills, upload_bytes, records_unsaved) = (Counter::default(), Counter::default(), Counter::default());
        let (cluster_nodes, cluster_queued, cluster_free_slots) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let routed_family = Family::<Labels, Counter>::default();
        let cluster_routed = ["here", "queue"].map(|to| routed_family.get_or_create_owned(&vec![("to", to)]));
        let cluster_refused = Family::<Labels, Counter>::default();

        registry.register("runs", "Runs ended, by language, face and how they ended", runs_family);
        registry.register(
            "run_seconds",
            "Wall-clock time of each run or notebook cell, by language and face",
            run_seconds_family,
        );
        registry.register(
            "cold_start_seconds",
            "Time to have an instance ready for a new session (a warm one taken, or one made), by language and face",
            cold_family,
        );
        registry.register(
            "sessions",
            "Sessions running a call now (runs of every face and model calls), and live ones held between calls",
            session_family,
        );
        registry.register("kills", "Runs stopped by a client, a disconnect or the server's stop", kills.clone());
        registry.register("limit_hits", "Runs ended by a limit, by limit", limit_family);
        registry.register("upload_bytes", "Dataset bytes received and acknowledged", upload_bytes.clone());
        registry.register(
            "records_unsaved",
            "Finished runs whose record was not queued for the data folder (its writer was too far behind): kept in memory only",
            records_unsaved.clone(),
        );
        registry.register("connections", "WebSockets open now, by face", connection_family);
        registry.register("refusals", "Requests and connections turned away, by cause", refusal_family);
        registry.register("cluster_nodes", "Cluster mode: nodes seen alive, this one included", cluster_nodes.clone());
        registry.register(
            "cluster_queued_runs",
            "Cluster mode: runs waiting in the cluster's queue",
            cluster_queued.clone(),
        );
        registry.register(
            "cluster_free_slots",
            "Cluster mode: running slots free across the nodes seen",
            cluster_free_slots.clone(),
        );
        registry.register(
            "cluster_routed",
            "Cluster mode: one-shot runs of this node's clients, by where they went: run here, or through the queue",
            routed_family,
        );
        registry.register(
            "cluster_refused",
            "Cluster mode: messages from the NATS bus refused, by why: not sealed with the cluster secret, stale, or replayed",
            cluster_refused.clone(),
        );
        Metrics {
            registry,
            runs,
            run_seconds,
            cold_start_seconds,
            kills,
            limit_hits,
            upload_bytes,
            records_unsaved,
            connections,
            refusals,
            sessions_running,
            sessions_live,
            cluster_nodes,
            cluster_queued,
            cluster_free_slots,
            cluster_routed,
            cluster_refused,
        }
    }

    /// Cluster mode: a one-shot run of this node's client was run here, or queued.
    pub fn routed(&self, queued: bool) {
        self.cluster_routed[usize::from(queued)].inc();
    }

    /// Cluster mode: a message from the NATS bus was refused (`why`: one
    /// of a few fixed words).
    pub fn cluster_refused(&self, why: &'static str) {
        self.cluster_refused.get_or_create(&vec![("why", why)]).inc();
    }

    /// Cluster mode: what this node sees of the cluster.
    pub fn set_cluster(&self, nodes: usize, queued: u64, free_slots: usize) {
        self.cluster_nodes.set(nodes as i64);
        self.cluster_queued.set(queued as i64);
        self.cluster_free_slots.set(free_slots as i64);
    }

    /// A run (or a notebook cell) ended.
    pub fn run_ended(&self, language: Language, face: Face, reason: EndReason, wall: Duration) {
        let at = language_index(language) * FACES + face_index(face);
        self.runs[at * REASONS + reason_index(reason)].inc();
        self.run_seconds[at].observe(wall);
        if is_limit(reason) {
            self.limit_hits[reason_index(reason)].inc();
        }
    }

    /// A session got its instance in `took`.
    pub fn cold_start(&self, language: Language, face: Face, took: Duration) {
        self.cold_start_seconds[language_index(language) * FACES + face_index(face)].observe(took);
    }

    pub fn killed(&self) {
        self.kills.inc();
    }

    pub fn uploaded(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }

    /// A finished run's record could not be queued for the data folder.
    pub fn record_unsaved(&self) {
        self.records_unsaved.inc();
    }

    pub fn refused(&self, cause: Refusal) {
        self.refusals[Refusal::ALL.iter().position(|&c| c == cause).unwrap_or(0)].inc();
    }

    /// Counts a socket of `face` as open until the guard is dropped.
    pub fn connection(self: &Arc<Self>, face: Face) -> ConnectionGauge {
        let gauge = self.connections[face_index(face)].clone();
        gauge.inc();
        ConnectionGauge { gauge }
    }

    /// The text a scrape gets, with the session gauges set to `running` and `live`.
    pub fn encode(&self, running: usize, live: usize) -> String {
        self.sessions_running.set(running as i64);
        self.sessions_live.set(live as i64);
        let mut text = String::with_capacity(32 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The content type of `Metrics::encode`'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// An open socket, counted in `sandlot_connections{face}` while it lives.
pub struct ConnectionGauge {
    gauge: Gauge,
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_moves_its_own_series_and_a_limit_its_limit() {
        let metrics = Arc::new(Metrics::new());
        metrics.run_ended(Language::Lua, Face::Ranna, EndReason::Timeout, Duration::from_millis(3));
        metrics.cold_start(Language::Lua, Face::Ranna, Duration::from_micros(300));
        metrics.refused(Refusal::Rate);
        metrics.record_unsaved();
        let open = metrics.connection(Face::Actions);
        let text = metrics.encode(2, 5);
        for line in [
            r#"sandlot_runs_total{language="lua",face="ranna",reason="timeout"} 1"#,
            r#"sandlot_runs_total{language="lua",face="ranna",reason="exit"} 0"#,
            r#"sandlot_limit_hits_total{limit="timeout"} 1"#,
            r#"sandlot_run_seconds_bucket{language="lua",face="ranna",le="0.002"} 0"#,
            r#"sandlot_run_seconds_bucket{language="lua",face="ranna",le="0.005"} 1"#,
            r#"sandlot_run_seconds_bucket{language="lua",face="ranna",le="120"} 1"#,
            r#"sandlot_run_seconds_bucket{language="lua",face="ranna",le="+Inf"} 1"#,
            r#"sandlot_run_seconds_count{language="lua",face="ranna"} 1"#,
            r#"sandlot_cold_start_seconds_bucket{language="lua",face="ranna",le="0.0005"} 1"#,
            r#"sandlot_refusals_total{cause="rate"} 1"#,
            "sandlot_records_unsaved_total 1",
            r#"sandlot_connections{face="actions"} 1"#,
            r#"sandlot_sessions{state="running"} 2"#,
            r#"sandlot_sessions{state="live"} 5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        drop(open);
        assert!(metrics.encode(0, 0).lines().any(|l| l == r#"sandlot_connections{face="actions"} 0"#));
    }
}

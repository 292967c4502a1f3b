//! One-shot runs through the cluster's work queue.
//!
//! A node runs its own clients' runs itself while it has a core to spare
//! (`ClusterConfig::local_runs`) and the queue is empty; the rest go through
//! the queue, to whichever node has room (this one too).
//!
//! The node holding the client (the run's *origin*) admits the run (the
//! client's share and rate), makes its entry and events (`Registry::remote`)
//! and queues a `Job` on `SANDLOT_RUNS`. A node with a free running slot
//! pulls it (`pull`), acks it as it starts it, and sends its events back
//! to `sandlot.to.<origin>.<run id>` as frames: a kind byte, a sequence
//! number, then the body (`STARTED` with the node's name, output, and
//! `FINISHED` with the outcome and placeholders). The origin's `follow`
//! feeds them to the run's events, in order; a gap (frames dropped by a
//! slow subscriber) fails the run rather than lose output silently. A KILL
//! at the origin ends the run there at once and is sent on to
//! `sandlot.kill.<node>`. A run no node starts within its wall clock ends as
//! `timeout` (and no node starts it after: the job carries that deadline);
//! a run whose node goes quiet ends as `node-lost`.
//!
//! Jobs, frames and kills are sealed with the cluster secret (`seal.rs`):
//! a job opens only as sealed by its origin, and runs under the limits of
//! the node that takes it, never above them; a node takes a job once (the
//! ids it took, until their deadline); an origin reads frames only from
//! the node that started its run, in order (a frame seen before is
//! dropped), and tells any other node that starts it to stop.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::seal::{Opened, Seal};
use super::{Cluster, NODE_LOST_AFTER, valid_node_name};
use crate::error::Error;
use crate::input::Stdin;
use crate::language::Language;
use crate::limits::Limits;
use crate::metrics::Face;
use crate::program::{Program, SourceFile};
use crate::registry::{Client, Entry, Registry, RemoteRun, Reserved, Started};
use crate::run::{EndReason, RunOutcome, SessionEvent};
use crate::runtime::SessionOptions;
use crate::sync::lock;

const STREAM: &str = "SANDLOT_RUNS";
const SUBJECT: &str = "sandlot.runs";
const CONSUMER: &str = "workers";
/// Runs waiting in the queue at most; past it new runs are refused as busy.
pub(super) const MAX_QUEUED: i64 = 10_000;
/// Runs one node follows for its clients at most (queued, or running elsewhere).
const MAX_FOLLOWED: usize = 4096;
/// Pull requests a node keeps open while it has a free running slot.
const PULLERS: usize = 4;
/// How long one pull request waits for a run.
const PULL_WAIT: Duration = Duration::from_secs(5);
/// How often a node with no free slot looks again.
const FULL_RECHECK: Duration = Duration::from_millis(5);
/// Frames of one run waiting for its follower at most; past it they are
/// dropped and the run fails as incomplete.
const ROUTE_FRAMES: usize = 1024;
/// How long after a run's wall clock its follower waits for its end.
const END_GRACE: Duration = Duration::from_secs(5);
/// How often a follower checks its run's node and deadlines.
const FOLLOW_CHECK: Duration = Duration::from_millis(250);
/// The longest wall clock a job may ask for.
const MAX_WALL_CLOCK: Duration = Duration::from_secs(3600);
/// How long the queue waits for a taken run's ack before it hands the run
/// out again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// The longest a run may wait in the queue: well under `ACK_WAIT`, so that
/// a run handed out again (its ack lost) is past its start deadline by then
/// and no node starts it a second time.
pub(super) const MAX_QUEUE_WAIT: Duration = Duration::from_secs(20);
/// Ids of the jobs a node took and whose deadline has not passed, kept at
/// most; past it a job is left to another node.
const MAX_TAKEN: usize = 1 << 16;

const STARTED: u8 = b'S';
const STDOUT: u8 = b'O';
const STDERR: u8 = b'E';
const FINISHED: u8 = b'F';

/// A queued run.
#[derive(Serialize, Deserialize)]
struct Job<'a> {
    /// The run's id at its origin.
    id: String,
    /// The node holding the client.
    origin: String,
    face: String,
    language: String,
    #[serde(borrow)]
    files: Vec<JobFile<'a>>,
    main_file: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Its whole standard input (base64), if given.
    stdin: Option<String>,
    /// The limits its origin asks for; the node that runs it lowers each to
    /// its own.
    limits: JobLimits,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    /// No node starts it after this (ms since the Unix epoch): its origin has
    /// ended it as `timeout` by then.
    not_after_ms: u64,
}

/// The limits a job asks for.
#[derive(Serialize, Deserialize)]
struct JobLimits {
    wall_clock_ms: u64,
    fuel: u64,
    memory_bytes: usize,
    output_bytes: usize,
}

impl JobLimits {
    fn of(limits: &Limits) -> JobLimits {
        JobLimits {
            wall_clock_ms: u64::try_from(limits.wall_clock.as_millis()).unwrap_or(u64::MAX),
            fuel: limits.fuel,
            memory_bytes: limits.memory_bytes,
            output_bytes: limits.output_bytes,
        }
    }

    /// `own` (the limits of the node that runs the job), each lowered to
    /// what the job asks for: a job never runs above them.
    fn within(&self, own: Limits) -> Limits {
        let wall = Duration::from_millis(self.wall_clock_ms).min(own.wall_clock).min(MAX_WALL_CLOCK);
        let (fuel, memory, output) = (own.fuel.min(self.fuel), own.memory_bytes, own.output_bytes);
        own.with_wall_clock(wall)
            .with_fuel(fuel)
            .with_memory_bytes(memory.min(self.memory_bytes))
            .with_output_bytes(output.min(self.output_bytes))
    }
}

#[derive(Serialize, Deserialize)]
struct JobFile<'a> {
    name: std::borrow::Cow<'a, str>,
    content: std::borrow::Cow<'a, str>,
}

/// A run's end, as its node reports it.
#[derive(Serialize, Deserialize)]
struct Finished {
    exit_code: i32,
    reason: String,
    message: Option<String>,
    wall_time_us: u64,
    fuel_used: u64,
    peak_memory: usize,
    value: Option<String>,
    placeholders: BTreeMap<String, Box<RawValue>>,
}

impl Finished {
    fn outcome(self) -> RunOutcome {
        RunOutcome {
            exit_code: self.exit_code,
            reason: EndReason::ALL.into_iter().find(|r| r.as_str() == self.reason).unwrap_or(EndReason::Error),
            message: self.message,
            wall_time: Duration::from_micros(self.wall_time_us),
            fuel_used: self.fuel_used,
            peak_memory: self.peak_memory,
            value: self.value,
        }
    }
}

pub(super) struct Runs {
    client: async_nats::Client,
    seal: Arc<Seal>,
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    consumer: PullConsumer,
    node: String,
    registry: Registry,
    /// Options of the sessions of runs taken from the queue.
    options: SessionOptions,
    /// The NATS server's largest message.
    max_payload: usize,
    /// How long a run waits in the queue at most (`ClusterConfig::queue_wait`).
    queue_wait: Option<Duration>,
    /// Below this many runs going here, this node's clients' runs run here
    /// (`ClusterConfig::local_runs`).
    local_runs: usize,
    /// Runs followed here: where their frames go.
    routes: Mutex<HashMap<String, mpsc::Sender<Opened>>>,
    /// Runs going here for other nodes, by their origin's id.
    running: Mutex<HashMap<String, Going>>,
    /// The ids of the jobs this node took, with their deadlines (ms since
    /// the Unix epoch): a job replayed is not run twice here.
    taken: Mutex<HashMap<String, u64>>,
}

/// A run taken from the queue, as far as kills are concerned.
enum Going {
    /// Its session is being made; a kill meanwhile is applied once it is.
    Starting {
        killed: bool,
    },
    Running(Arc<Entry>),
}

/// The subscriptions a node's runs need, made before it counts as joined.
pub(super) struct Subscriptions {
    frames: async_nats::Subscriber,
    kills: async_nats::Subscriber,
}

impl Runs {
    pub(super) async fn new(
        jetstream: &jetstream::Context,
        client: &async_nats::Client,
        seal: Arc<Seal>,
        node: &str,
        registry: Registry,
        options: SessionOptions,
        routing: &super::ClusterConfig,
    ) -> Result<(Runs, Subscriptions), Error> {
        let max_payload = client.server_info().max_payload;
        let config = jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            max_messages: MAX_QUEUED,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        let stream = jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|e| Error::Cluster(format!("could not open the run queue {STREAM}: {e}")))?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_waiting: 4096,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::Cluster(format!("could not open the run queue's consumer: {e}")))?;
        let subscribe = |subject: String| async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|e| Error::Cluster(format!("could not subscribe to {subject}: {e}")))
        };
        let subscriptions = Subscriptions {
            frames: subscribe(format!("sandlot.to.{node}.*")).await?,
            kills: subscribe(format!("sandlot.kill.{node}")).await?,
        };
        let runs = Runs {
            client: client.clone(),
            seal,
            jetstream: jetstream.clone(),
            stream,
            consumer,
            node: node.to_string(),
            registry,
            options,
            max_payload,
            queue_wait: routing.queue_wait,
            local_runs: routing
                .local_runs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |cores| cores.get())),
            routes: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            taken: Mutex::new(HashMap::new()),
        };
        Ok((runs, subscriptions))
    }

    /// Starts routing frames and kills, and pulling runs.
    pub(super) fn start(cluster: &Cluster, subscriptions: Subscriptions) {
        tokio::spawn(route_frames(cluster.clone(), subscriptions.frames));
        tokio::spawn(take_kills(cluster.clone(), subscriptions.kills));
        for _ in 0..PULLERS {
            tokio::spawn(pull(cluster.clone()));
        }
    }

    /// Runs waiting in the queue.
    pub(super) async fn queue_depth(&self) -> Result<u64, Error> {
        let info = self.stream.get_info().await.map_err(|e| Error::Cluster(e.to_string()))?;
        Ok(info.state.messages)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn submit(
        &self,
        cluster: &Cluster,
        registry: &Registry,
        client: &Client,
        face: Face,
        language: Language,
        program: Program,
        options: &SessionOptions,
    ) -> Result<Result<Started, Program>, Error> {
        let program = program.validated()?;
        let stdin = match &options.stdin {
            Stdin::Closed => None,
            Stdin::Data(bytes) => Some(bytes.clone()),
            // An open standard input is written from this node: such runs run here.
            Stdin::Open(_) => return Ok(Err(program)),
        };
        if self.runs_here(cluster, registry, language) {
            return Ok(Err(program));
        }
        let limits = options.limits.clone().unwrap_or_else(|| registry.runtime().default_limits());
        // What cannot go through the queue in one message runs here.
        let strings = program.args.iter().chain(program.env.iter().flat_map(|(k, v)| [k, v]));
        let size: usize = program.files.iter().map(|f| f.name.len() + f.content.len() * 2).sum::<usize>()
            + strings.map(|s| s.len() * 2 + 8).sum::<usize>()
            + stdin.as_ref().map_or(0, |s| s.len() * 4 / 3)
            + options.context.as_ref().map_or(0, |c| c.get().len())
            + 1024
            + super::seal::OVERHEAD;
        if size > self.max_payload {
            return Ok(Err(program));
        }
        if lock(&self.routes).len() >= MAX_FOLLOWED {
            return Err(Error::Busy { limit: MAX_FOLLOWED });
        }
        let admission = registry.admit(client)?;
        let (started, run) = registry.remote(client, face, language, options);
        let id = started.entry.id().to_string();
        let wall = limits.wall_clock.min(MAX_WALL_CLOCK);
        let wait = self.queue_wait.map_or(wall, |wait| wait.min(wall)).min(MAX_QUEUE_WAIT);
        let job = Job {
            id: id.clone(),
            origin: self.node.clone(),
            face: face.as_str().into(),
            language: language.name().into(),
            files: program
                .files
                .iter()
                .map(|f| JobFile { name: f.name.as_str().into(), content: f.content.as_str().into() })
                .collect(),
            main_file: program.main_file.clone(),
            args: program.args.clone(),
            env: program.env.clone(),
            stdin: stdin.map(|bytes| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(bytes)
            }),
            limits: JobLimits::of(&limits.clone().with_wall_clock(wall)),
            context: options.context.as_deref(),
            not_after_ms: unix_ms() + wait.as_millis() as u64,
        };
        let payload = self.seal.seal(SUBJECT, &serde_json::to_vec(&job).expect("a job is JSON"));
        let (frames_in, frames) = mpsc::channel(ROUTE_FRAMES);
        lock(&self.routes).insert(id.clone(), frames_in);
        let queued = async { self.jetstream.publish(SUBJECT, payload).await?.await };
        if let Err(e) = queued.await {
            // The cluster is out of reach or its queue is full: this node
            // runs it, if it has room.
            lock(&self.routes).remove(&id);
            tracing::warn!(error = %e, "the cluster's run queue did not take a run; running it here");
            return Ok(Err(program));
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            follow(cluster, run, frames, wait, wall).await;
            drop(admission);
        });
        Ok(Ok(started))
    }

    /// Whether a run this node's client sends should run here, without the
    /// queue: this node has a free slot and a core to spare (fewer than
    /// `local_runs` runs going here), no run waits in the queue (those came
    /// first), and its language is ready here. The queue costs a run about
    /// a millisecond on a shared 2-core machine (README, cluster mode), and
    /// the NATS server some work; it pays only once this node is busy.
    fn runs_here(&self, cluster: &Cluster, registry: &Registry, language: Language) -> bool {
        let (free, all) = registry.running_slots();
        free > 0
            && all - free < self.local_runs
            && cluster.queue_depth() == 0
            && registry.runtime().preparing(language).is_none()
    }

    fn kill_on(&self, node: &str, id: &str) {
        let client = self.client.clone();
        let subject = format!("sandlot.kill.{node}");
        let kill = self.seal.seal(&subject, id.as_bytes());
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, kill).await {
                tracing::warn!(error = %e, "could not send a kill to the node running the run");
            }
        });
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Notes that this node takes the job `id` (no node starts it after
/// `not_after`); `false` if it took it before, or keeps `MAX_TAKEN`
/// others.
fn take_once(taken: &Mutex<HashMap<String, u64>>, id: &str, not_after: u64) -> bool {
    let mut taken = lock(taken);
    if taken.contains_key(id) {
        return false;
    }
    if taken.len() >= MAX_TAKEN {
        let now = unix_ms();
        taken.retain(|_, deadline| *deadline >= now);
        if taken.len() >= MAX_TAKEN {
            return false;
        }
    }
    taken.insert(id.to_string(), not_after);
    true
}

/// An end this node reports itself (the run's node never did).
fn ended(reason: EndReason, message: String, since: Instant) -> RunOutcome {
    RunOutcome {
        exit_code: reason.forced_exit_code().unwrap_or(1),
        reason,
        message: Some(message),
        wall_time: since.elapsed(),
        fuel_used: 0,
        peak_memory: 0,
        value: None,
    }
}

/// The origin's side of a queued run: feeds its frames to its events until
/// its end, or ends it when no node starts it in time or its node is lost.
async fn follow(cluster: Cluster, run: RemoteRun, mut frames: mpsc::Receiver<Opened>, wait: Duration, wall: Duration) {
    let runs = &cluster.inner.runs;
    let id = run.entry.id().to_string();
    let queued = Instant::now();
    let (mut node, mut started) = (None::<String>, queued);
    let (mut expected, mut output) = (0u32, 0usize);
    let mut stop = run.stop.subscribe();
    let mut killed = false;
    let mut check = tokio::time::interval(FOLLOW_CHECK);
    let outcome = loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    break ended(EndReason::Error, "the cluster stopped routing this run's events".into(), queued);
                };
                let Some((kind, seq, body)) = parse_frame(&frame.body) else { continue };
                // Another node started it too (its job replayed): it is
                // told to stop, and nothing it sends is read.
                if node.as_ref().is_some_and(|node| *node != frame.from) {
                    if kind == STARTED {
                        runs.kill_on(&frame.from, &id);
                    }
                    continue;
                }
                if seq < expected {
                    continue; // seen before
                }
                if seq != expected {
                    if let Some(node) = &node {
                        runs.kill_on(node, &id);
                    }
                    break ended(
                        EndReason::Error,
                        "part of this run's output was lost on its way through the cluster; run it again".into(),
                        queued,
                    );
                }
                expected += 1;
                match kind {
                    STARTED => {
                        let name = frame.from.clone();
                        started = Instant::now();
                        if killed {
                            runs.kill_on(&name, &id);
                        }
                        node = Some(name);
                    }
                    // The run's node kept it within its output limit; more is not taken.
                    STDOUT | STDERR if output + body.len() <= run.limits.output_bytes => {
                        output += body.len();
                        run.reporter.output(kind == STDERR, body);
                    }
                    FINISHED => match serde_json::from_slice::<Finished>(body) {
                        Ok(mut finished) => {
                            for (name, json) in std::mem::take(&mut finished.placeholders) {
                                let _ = run.placeholders.set_json(&name, json.get().to_string());
                            }
                            break finished.outcome();
                        }
                        Err(e) => break ended(EndReason::Error, format!("the run's end was unreadable: {e}"), queued),
                    },
                    _ => {}
                }
            }
            changed = stop.changed(), if !killed => {
                killed = true;
                if let (Ok(()), Some(node)) = (changed, &node) {
                    runs.kill_on(node, &id);
                }
            }
            _ = check.tick() => match &node {
                None if queued.elapsed() > wait => {
                    break ended(
                        EndReason::Timeout,
                        format!(
                            "no node of the cluster had room to start this run within {:.1} s; try again shortly",
                            wait.as_secs_f64()
                        ),
                        queued,
                    );
                }
                // Its STARTED shows it was alive then; past that, its heartbeats
                // (a node that just joined may not have been seen yet).
                Some(name) if started.elapsed() > NODE_LOST_AFTER && !cluster.alive(name) => {
                    break ended(EndReason::NodeLost, format!("node {name}, which was running it, stopped answering"), queued);
                }
                Some(name) if started.elapsed() > wall + END_GRACE => {
                    runs.kill_on(name, &id);
                    break ended(EndReason::NodeLost, format!("node {name} did not report the run's end in time"), queued);
                }
                _ => {}
            },
        }
    };
    lock(&runs.routes).remove(&id);
    let outcome = run.reporter.finish(outcome);
    run.entry.record(outcome);
}

/// A frame's kind, sequence number and body.
fn parse_frame(frame: &[u8]) -> Option<(u8, u32, &[u8])> {
    let (&kind, rest) = frame.split_first()?;
    let seq = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    Some((kind, seq, &rest[4..]))
}

/// Sends every frame that arrives for a run followed here to its follower.
async fn route_frames(cluster: Cluster, mut frames: async_nats::Subscriber) {
    let runs = &cluster.inner.runs;
    while let Some(message) = frames.next().await {
        let Some(id) = message.subject.rsplit('.').next() else { continue };
        let Ok(frame) = runs.seal.open(&message.subject, &message.payload) else { continue };
        let route = lock(&runs.routes).get(id).cloned();
        match route {
            // A full route drops the frame; its follower sees the gap.
            Some(route) => drop(route.try_send(frame)),
            None => {
                // A run this node no longer follows (killed while queued,
                // then given up) started after all: stop it.
                if let Some((STARTED, _, _)) = parse_frame(&frame.body) {
                    runs.kill_on(&frame.from, id);
                }
            }
        }
    }
}

/// Kills runs going here when their origin asks.
async fn take_kills(cluster: Cluster, mut kills: async_nats::Subscriber) {
    let runs = &cluster.inner.runs;
    while let Some(message) = kills.next().await {
        let Ok(kill) = runs.seal.open_once(&message.subject, &message.payload) else { continue };
        let id = String::from_utf8_lossy(&kill.body);
        let entry = match lock(&runs.running).get_mut(id.as_ref()) {
            Some(Going::Running(entry)) => entry.clone(),
            Some(Going::Starting { killed }) => {
                *killed = true;
                continue;
            }
            None => continue,
        };
        entry.kill();
    }
}

/// Takes queued runs while this node has free running slots, one per pull.
async fn pull(cluster: Cluster) {
    let runs = &cluster.inner.runs;
    loop {
        if runs.registry.is_closing() {
            return;
        }
        if runs.registry.running_slots().0 == 0 {
            tokio::time::sleep(FULL_RECHECK).await;
            continue;
        }
        let batch = runs.consumer.batch().max_messages(1).expires(PULL_WAIT).messages().await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::debug!(error = %e, "could not pull from the run queue; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let Ok(message) = message else { break };
            // A job no node sealed is no job: it is dropped from the queue.
            let Ok(job) = runs.seal.open(SUBJECT, &message.payload) else {
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            // A node still preparing the run's language leaves it to a
            // node that has it (a node just started would make it wait).
            if let Ok(Peek { language }) = serde_json::from_slice::<Peek>(&job.body)
                && let Ok(language) = language.parse::<crate::language::Language>()
                && runs.registry.runtime().preparing(language).is_some()
            {
                let _ = message.ack_with(AckKind::Nak(Some(PREPARING_RETRY))).await;
                continue;
            }
            // The slot may have gone to a run of this node's own meanwhile:
            // then the run goes back to the queue for another node.
            let Some(slot) = runs.registry.try_reserve() else {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            // Taken for good. The ack is not waited for (a round trip before
            // every run): should it be lost, the queue hands the run out
            // again only after `ACK_WAIT`, past its start deadline, so no
            // node starts it twice.
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "a queued run could not be taken; another node will");
                continue;
            }
            tokio::spawn(run_job(cluster.clone(), slot, job));
        }
    }
}

/// The one field of a `Job` a node reads before it takes it.
#[derive(Deserialize)]
struct Peek {
    language: String,
}

/// How soon a run a node left (its language still preparing there) is
/// handed out again.
const PREPARING_RETRY: Duration = Duration::from_millis(100);

/// Where a run's frames go, numbered.
struct Frames {
    client: async_nats::Client,
    seal: Arc<Seal>,
    subject: String,
    seq: u32,
}

impl Frames {
    async fn send(&mut self, kind: u8, body: &[u8]) {
        let mut frame = Vec::with_capacity(5 + body.len());
        frame.push(kind);
        frame.extend_from_slice(&self.seq.to_be_bytes());
        frame.extend_from_slice(body);
        self.seq += 1;
        let frame = self.seal.seal(&self.subject, &frame);
        if let Err(e) = self.client.publish(self.subject.clone(), frame).await {
            tracing::warn!(error = %e, "could not send a run's events to its node");
        }
    }

    async fn finish(&mut self, outcome: &RunOutcome, placeholders: BTreeMap<String, Box<RawValue>>) {
        let finished = Finished {
            exit_code: outcome.exit_code,
            reason: outcome.reason.as_str().into(),
            message: outcome.message.clone(),
            wall_time_us: outcome.wall_time.as_micros() as u64,
            fuel_used: outcome.fuel_used,
            peak_memory: outcome.peak_memory,
            value: outcome.value.clone(),
            placeholders,
        };
        let body = serde_json::to_vec(&finished).expect("an end is JSON");
        self.send(FINISHED, &body).await;
        let _ = self.client.flush().await;
    }
}

/// Runs a queued job here and sends its events to its origin.
async fn run_job(cluster: Cluster, slot: Reserved, sealed: Opened) {
    let runs = &cluster.inner.runs;
    let job: Job = match serde_json::from_slice(&sealed.body) {
        Ok(job) => job,
        Err(e) => return tracing::warn!(error = %e, "a queued run was unreadable; dropped"),
    };
    // Its origin is the node that sealed it: a node queues its own clients' runs only.
    if job.origin != sealed.from || valid_node_name(&job.origin).is_err() || uuid::Uuid::parse_str(&job.id).is_err() {
        return tracing::warn!("a queued run named no valid origin; dropped");
    }
    if unix_ms() > job.not_after_ms || !take_once(&runs.taken, &job.id, job.not_after_ms) {
        return; // its origin has ended it as timed out, or this node ran it
    }
    let subject = format!("sandlot.to.{}.{}", job.origin, job.id);
    let mut frames = Frames { client: runs.client.clone(), seal: runs.seal.clone(), subject, seq: 0 };
    // Its origin learns at once which node has it (so it can tell when this
    // node is lost), and may send a kill from now on.
    lock(&runs.running).insert(job.id.clone(), Going::Starting { killed: false });
    frames.send(STARTED, runs.node.as_bytes()).await;
    let ran = run_here(runs, job, &mut frames, slot).await;
    lock(&runs.running).remove(ran.as_str());
}

/// `run_job` once its origin knows: runs it and sends its events; returns its id.
async fn run_here(runs: &Runs, job: Job<'_>, frames: &mut Frames, slot: Reserved) -> String {
    let id = job.id.clone();
    let start = Instant::now();
    let fail = |message: String| ended(EndReason::Error, message, start);
    let Ok(language) = job.language.parse::<Language>() else {
        frames.finish(&fail(format!("this node has no language {}", job.language)), BTreeMap::new()).await;
        return id;
    };
    let face = Face::ALL.into_iter().find(|f| f.as_str() == job.face).unwrap_or_default();
    let stdin = match job.stdin.as_deref().map(|text| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(text)
    }) {
        None => Stdin::Closed,
        Some(Ok(bytes)) => Stdin::Data(bytes.into()),
        Some(Err(e)) => {
            frames.finish(&fail(format!("the run's input was unreadable: {e}")), BTreeMap::new()).await;
            return id;
        }
    };
    let own = runs.options.limits.clone().unwrap_or_else(|| runs.registry.runtime().default_limits());
    let options = SessionOptions {
        limits: Some(job.limits.within(own)),
        context: job.context.map(|c| c.to_owned()),
        stdin,
        ..runs.options.clone()
    };
    let files =
        job.files.into_iter().map(|f| SourceFile { name: f.name.into_owned(), content: f.content.into_owned() });
    let program = Program { files: files.collect(), main_file: job.main_file, args: job.args, env: job.env };
    let started = match runs.registry.start_reserved(slot, face, language, program, options).await {
        Ok(started) => started,
        Err(e) => {
            frames.finish(&fail(e.to_string()), BTreeMap::new()).await;
            return id;
        }
    };
    let before = lock(&runs.running).insert(id.clone(), Going::Running(started.entry.clone()));
    if let Some(Going::Starting { killed: true }) = before {
        started.entry.kill();
    }
    let placeholders = started.entry.placeholders().clone();
    let mut events = started.events;
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Stdout(bytes) => frames.send(STDOUT, &bytes).await,
            SessionEvent::Stderr(bytes) => frames.send(STDERR, &bytes).await,
            SessionEvent::Spawned => {}
            SessionEvent::Finished(outcome) => {
                let saved = placeholders
                    .snapshot()
                    .into_iter()
                    .filter_map(|(name, json)| Some((name, RawValue::from_string(json.get().to_string()).ok()?)))
                    .collect();
                frames.finish(&outcome, saved).await;
                break;
            }
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_within_the_limits_of_the_node_that_takes_it() {
        let own = Limits::default().with_wall_clock(Duration::from_secs(5));
        let greedy =
            JobLimits { wall_clock_ms: 20_000, fuel: u64::MAX, memory_bytes: usize::MAX, output_bytes: usize::MAX };
        assert_eq!(greedy.within(own.clone()), own, "a job asks for more than the node gives: it gets the node's");
        let modest = JobLimits { wall_clock_ms: 1_000, fuel: 1_000, memory_bytes: 1 << 20, output_bytes: 1 << 10 };
        let limits = modest.within(own.clone());
        assert_eq!(
            (limits.wall_clock, limits.fuel, limits.memory_bytes, limits.output_bytes),
            (Duration::from_secs(1), 1_000, 1 << 20, 1 << 10),
            "a job asks for less: it gets that"
        );
        assert_eq!(limits.placeholder_bytes, own.placeholder_bytes, "what a job does not name is the node's");
    }
}

//! Accepting connections, under caps a client cannot talk its way past.
//!
//! Every TCP connection is admitted here or closed at once:
//! - at most `max_connections` in total, fewer when the process's file
//!   descriptors would not leave enough for sessions, the store and datasets
//!   (`connection_cap`), and at most `max_connections_per_address` from one
//!   client address (an IPv6 /64 counts as one address);
//! - HTTP/1 request headers must arrive within `header_timeout`: hyper's
//!   timer, which also closes a keep-alive connection that sends nothing more;
//! - every read goes through the connection's `ReadBudget`, which a WebSocket
//!   face narrows to the first-message budget until its client has shown a
//!   token, so an unauthenticated client cannot make the server buffer more.
//!
//! A connection's place (`Slot`) lives inside its I/O object, so a socket
//! upgraded to a WebSocket keeps counting until it closes.
//!
//! Idle connections cannot starve the others: when every place is taken, a
//! new connection is admitted by evicting an idle one (`Activity`: no HTTP
//! request or response going, no run going on its socket), from the address
//! holding the most connections, the one whose client has been silent the
//! longest. At most `EVICTING_AT_ONCE` are closing at a time (their file
//! descriptors are part of the reserve `ServerConfig::connection_caps` keeps);
//! past that, or with every connection busy, the new one is refused.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::metrics::{Metrics, Refusal};
use crate::sync::lock;

/// What every request of a connection carries (a request extension).
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) address: SocketAddr,
    /// The connection's read budget: narrowed before authentication.
    pub(crate) budget: Arc<ReadBudget>,
    /// Whether the connection is in use, for the admission's evictions.
    pub(crate) activity: Arc<Activity>,
}

/// Connections told to close to make room that may be closing at once.
const EVICTING_AT_ONCE: usize = 64;

/// What the admission knows of one connection: whether it is doing
/// something for its client, when its client last sent something, and the
/// signal that evicts it.
pub(crate) struct Activity {
    address: IpAddr,
    /// HTTP requests being answered (until their response's body is sent).
    requests: AtomicUsize,
    /// Its socket's face has work going for the client (a run).
    socket_busy: AtomicBool,
    /// Milliseconds from `epoch` to the client's last request or message.
    heard_at: AtomicU64,
    epoch: Instant,
    /// Turns true when the connection is to close to make room.
    evicted: watch::Sender<bool>,
}

impl Activity {
    fn new(address: IpAddr, epoch: Instant) -> Self {
        let heard_at = AtomicU64::new(epoch.elapsed().as_millis() as u64);
        let (requests, socket_busy) = (AtomicUsize::new(0), AtomicBool::new(false));
        Activity { address, requests, socket_busy, heard_at, epoch, evicted: watch::channel(false).0 }
    }

    /// The client sent a request or a message (pings do not count).
    pub(crate) fn heard(&self) {
        self.heard_at.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether its socket's face has work going for the client.
    pub(crate) fn set_socket_busy(&self, busy: bool) {
        self.socket_busy.store(busy, Ordering::Relaxed);
    }

    /// Counts one HTTP request as going until the guard is dropped.
    fn request(self: &Arc<Self>) -> Request {
        self.heard();
        self.requests.fetch_add(1, Ordering::SeqCst);
        Request(self.clone())
    }

    fn idle(&self) -> bool {
        self.requests.load(Ordering::SeqCst) == 0 && !self.socket_busy.load(Ordering::Relaxed)
    }

    fn is_evicted(&self) -> bool {
        *self.evicted.borrow()
    }

    /// Resolves once the connection is evicted.
    pub(crate) async fn evicted(&self) {
        let _ = self.evicted.subscribe().wait_for(|evicted| *evicted).await;
    }
}

/// One HTTP request going on a connection.
struct Request(Arc<Activity>);

impl Drop for Request {
    fn drop(&mut self) {
        self.0.heard();
        self.0.requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response's body, holding its request as going until it is dropped
/// (a streamed answer, such as MCP's, keeps its connection in use).
struct HeldBody {
    body: Body,
    _request: Request,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Peer {
    /// The address the server's per-client caps count by.
    pub(crate) fn client_address(&self) -> IpAddr {
        client_address(self.address.ip())
    }
}

/// The client an address belongs to: itself for IPv4, its /64 for IPv6
/// (one host commonly holds a whole /64).
pub(crate) fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// How many bytes a connection may still read; unlimited once lifted.
#[derive(Debug)]
pub(crate) struct ReadBudget(AtomicU64);

const UNLIMITED: u64 = u64::MAX;

impl ReadBudget {
    fn unlimited() -> Self {
        ReadBudget(AtomicU64::new(UNLIMITED))
    }

    /// From now on, at most `bytes` more may be read.
    pub(crate) fn limit(&self, bytes: u64) {
        self.0.store(bytes, Ordering::SeqCst);
    }

    /// No limit any more (the client has authenticated).
    pub(crate) fn lift(&self) {
        self.0.store(UNLIMITED, Ordering::SeqCst);
    }

    /// Counts `n` bytes read; false when they are past the budget.
    fn spend(&self, n: u64) -> bool {
        let mut left = self.0.load(Ordering::SeqCst);
        loop {
            if left == UNLIMITED {
                return true;
            }
            let (now, fits) = if n <= left { (left - n, true) } else { (0, false) };
            match self.0.compare_exchange(left, now, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return fits,
                Err(actual) => left = actual,
            }
        }
    }
}

/// The caps on connections, shared by the accept loop and the slots it hands out.
pub(crate) struct Admission {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
    /// Told whenever a connection closes, for the shutdown's wait.
    closed: watch::Sender<usize>,
    epoch: Instant,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only addresses with an open connection are kept.
    by_address: HashMap<IpAddr, usize>,
    /// Every open connection's activity, by its number.
    connections: HashMap<u64, Arc<Activity>>,
    next: u64,
    /// Connections evicted and not closed yet.
    evicting: usize,
}

impl Open {
    /// The connection to evict for room: an idle one (not evicted yet) of
    /// the address holding the most connections, silent the longest.
    fn victim(&self) -> Option<Arc<Activity>> {
        let idle = self.connections.values().filter(|a| a.idle() && !a.is_evicted());
        let held = |a: &Activity| self.by_address.get(&a.address).copied().unwrap_or(0);
        idle.max_by_key(|a| (held(a), std::cmp::Reverse(a.heard_at.load(Ordering::Relaxed)))).cloned()
    }
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
            closed: watch::channel(0).0,
            epoch: Instant::now(),
        })
    }

    /// A place for a connection from `ip`, or why there is none. When every
    /// place is taken, an idle connection is evicted to make one.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let address = client_address(ip);
        let mut open = lock(&self.open);
        if open.by_address.get(&address).is_some_and(|&held| held >= self.max_per_address) {
            return Err("this client address holds as many connections as it may");
        }
        if open.total.saturating_sub(open.evicting) >= self.max_total {
            if open.evicting >= EVICTING_AT_ONCE {
                return Err("the server holds as many connections as it may, and is closing idle ones");
            }
            let Some(victim) = open.victim() else {
                return Err("the server holds as many connections as it may, all of them in use");
            };
            victim.evicted.send_replace(true);
            open.evicting += 1;
        }
        *open.by_address.entry(address).or_insert(0) += 1;
        open.total += 1;
        let number = open.next;
        open.next += 1;
        let activity = Arc::new(Activity::new(address, self.epoch));
        open.connections.insert(number, activity.clone());
        Ok(Slot { admission: self.clone(), number, activity })
    }

    pub(crate) fn open(&self) -> usize {
        lock(&self.open).total
    }

    /// Waits until no connection is open, or `grace` has passed.
    pub(crate) async fn drained(&self, grace: Duration) {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(grace, async {
            while self.open() > 0 {
                if closed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// One admitted connection's place; given back when dropped.
struct Slot {
    admission: Arc<Admission>,
    number: u64,
    activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.admission.open);
        open.total -= 1;
        open.connections.remove(&self.number);
        if self.activity.is_evicted() {
            open.evicting -= 1;
        }
        let address = self.activity.address;
        if let Some(count) = open.by_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&address);
            }
        }
        let total = open.total;
        drop(open);
        self.admission.closed.send_replace(total);
    }
}

/// A TCP stream whose reads are counted against its budget, holding its slot.
struct Metered {
    tcp: TcpStream,
    budget: Arc<ReadBudget>,
    _slot: Slot,
}

impl AsyncRead for Metered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.tcp).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        if !self.budget.spend(read) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the client sent more than it may before authenticating",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Accepts connections until `stop` turns true, serving each with `router`.
pub(crate) async fn accept(
    listener: TcpListener,
    router: Router,
    admission: Arc<Admission>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        let (tcp, address) = match accepted {
            Ok(accepted) => accepted,
            // The client went away before it was accepted.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => continue,
            Err(e) => {
                // Most often out of file descriptors: wait for some to close.
                tracing::warn!(error = %e, "could not accept a connection; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match admission.admit(address.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                metrics.refused(Refusal::Connections);
                tracing::debug!(client = %address, "refused a connection: {why}");
                continue;
            }
        };
        // Events are small and latency is the product: no Nagle delays.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let budget = Arc::new(ReadBudget::unlimited());
        let peer = Peer { address, budget: budget.clone(), activity: slot.activity.clone() };
        let io = TokioIo::new(Metered { tcp, budget, _slot: slot });
        tokio::spawn(serve_connection(io, peer, router.clone(), header_timeout, stop.clone()));
    }
}

async fn serve_connection(
    io: TokioIo<Metered>,
    peer: Peer,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let evicted = peer.activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let going = peer.activity.request();
        request.extensions_mut().insert(peer.clone());
        let response = router.clone().oneshot(request.map(Body::new));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Body::new(HeldBody { body, _request: going })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    // Evicted (only when idle) or stopping, it closes once its request is answered.
    let closing = tokio::select! {
        _ = connection.as_mut() => return,
        stopping = stop.wait_for(|stopping| *stopping) => stopping.is_ok(),
        () = evicted.evicted() => true,
    };
    if closing {
        connection.as_mut().graceful_shutdown();
    }
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "a connection ended with an error");
    }
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the limit now in force (`None` where it cannot be read).
pub(crate) fn raise_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "could not raise the open-files limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_address(a), client_address(b));
        assert_ne!(client_address(a), client_address(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_address(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn budgets_refuse_past_their_limit_until_lifted() {
        let budget = ReadBudget::unlimited();
        assert!(budget.spend(1 << 40));
        budget.limit(10);
        assert!(budget.spend(6));
        assert!(!budget.spend(5));
        budget.lift();
        assert!(budget.spend(1 << 40));
    }

    #[tokio::test]
    async fn admission_caps_each_address_and_evicts_an_idle_connection_for_room() {
        let admission = Admission::new(3, 2);
        let [one, two, three]: [IpAddr; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"].map(|ip| ip.parse().unwrap());
        let a = admission.admit(one).unwrap();
        let b = admission.admit(one).unwrap();
        assert!(admission.admit(one).is_err(), "a third from one address");
        let c = admission.admit(two).unwrap();
        // Full: the address holding the most loses its connection silent the longest.
        a.activity.heard_at.store(1, Ordering::Relaxed);
        b.activity.heard_at.store(2, Ordering::Relaxed);
        let d = admission.admit(three).unwrap();
        assert_eq!([&a, &b, &c, &d].map(|slot| slot.activity.is_evicted()), [true, false, false, false]);
        // Connections in use are never evicted.
        b.activity.set_socket_busy(true);
        d.activity.set_socket_busy(true);
        let request = c.activity.request();
        assert!(admission.admit(three).is_err(), "full, and all in use");
        drop(a);
        assert!(admission.admit(three).is_err(), "the evicted one's place was the fourth's");
        drop(request);
        let e = admission.admit(three).unwrap();
        assert!(c.activity.is_evicted() && !e.activity.is_evicted(), "an answered request leaves its connection idle");
    }
}

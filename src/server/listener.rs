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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
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
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only addresses with an open connection are kept.
    by_address: HashMap<IpAddr, usize>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
            closed: watch::channel(0).0,
        })
    }

    /// A place for a connection from `ip`, or why there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let address = client_address(ip);
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err("the server holds as many connections as it may");
        }
        let from_address = open.by_address.entry(address).or_insert(0);
        if *from_address >= self.max_per_address {
            return Err("this client address holds as many connections as it may");
        }
        *from_address += 1;
        open.total += 1;
        Ok(Slot { admission: self.clone(), address })
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
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.admission.open);
        open.total -= 1;
        if let Some(count) = open.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&self.address);
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
        let peer = Peer { address, budget: budget.clone() };
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
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        router.clone().oneshot(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let stopping = tokio::select! {
        _ = connection.as_mut() => return,
        stopping = stop.wait_for(|stopping| *stopping) => stopping.is_ok(),
    };
    if stopping {
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
    async fn admission_caps_total_and_per_address() {
        let admission = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let a = admission.admit(one).unwrap();
        let _b = admission.admit(one).unwrap();
        assert!(admission.admit(one).is_err(), "a third from one address");
        let _c = admission.admit(two).unwrap();
        assert!(admission.admit(two).is_err(), "a fourth in all");
        drop(a);
        assert!(admission.admit(one).is_ok(), "a place freed is a place again");
    }
}

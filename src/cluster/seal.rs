//! The one way a node puts anything on the NATS bus, or reads anything off
//! it: every message, key-value entry and object-store chunk between nodes
//! is sealed here with the cluster secret, and opened here, or dropped.
//!
//! A NATS server lets any client it admits read and publish every subject
//! (`>`). Sealing makes that harmless to what the nodes say: without the
//! secret a client can neither read a message (code, output, placeholders,
//! client identities) nor make one a node accepts (a run, a kill, a
//! forwarded request, a record, a heartbeat).
//!
//! A sealed message is
//!
//! ```text
//! version (1) | sealed at (8: ms since the Unix epoch, big-endian) | nonce (24) | ciphertext + tag (16)
//! ```
//!
//! XChaCha20-Poly1305 under a key derived from the secret with HKDF-SHA-256;
//! the nonce is random (24 bytes: no two messages of any node share one).
//! The plaintext is the sealing node's name (a length byte, then the name)
//! and the body. The associated data binds the version, the time and the
//! message's *place*: the subject it is published on, the key it is stored
//! under, or the request it answers, so a sealed message moved elsewhere
//! does not open.
//!
//! Messages read once (`open_once`: kills, forwarded requests and their
//! replies) must be fresh (sealed within `MAX_AGE`, either way
//! for clocks that differ) and are refused when seen before (a bounded
//! cache of nonces: past its bound, anything sealed before the newest
//! nonce it forgot is refused as stale, so what lies past the bound still
//! counts). Messages read again by design (`open`: stored records, numbered
//! frames, queued jobs with their own deadline, heartbeats) are only
//! authenticated; their callers check what replay would mean (a frame's
//! number, a job's deadline and id, a heartbeat's time against the last
//! one of its node).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::metrics::Metrics;
use crate::sync::lock;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 24;
const TAG: usize = 16;
/// Bytes a sealed message adds to its body at most (header, tag, a node's name).
pub(crate) const OVERHEAD: usize = HEADER + TAG + 1 + 64;
/// How old (or, for clocks that differ, how far ahead) a message read
/// once may be.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);
/// Nonces of messages read once that a node remembers at most (~40 bytes
/// each, so ~5 MiB).
const REMEMBERED: usize = 1 << 17;
/// The shortest secret taken, in bytes of its text.
pub const MIN_SECRET_BYTES: usize = 32;

/// The cluster secret: every node of a cluster has the same. Its text is
/// never logged.
#[derive(Clone)]
pub struct ClusterSecret(std::sync::Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from its text (surrounding white space dropped); refused
    /// when shorter than `MIN_SECRET_BYTES`.
    pub fn from_text(text: &str) -> Result<ClusterSecret, String> {
        let text = text.trim();
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret has {} characters; it needs at least {MIN_SECRET_BYTES}. {}",
                text.len(),
                Self::how_to_make()
            ));
        }
        Ok(ClusterSecret(text.as_bytes().into()))
    }

    /// What to tell an operator who has no secret, or a bad one.
    pub fn how_to_make() -> &'static str {
        "Make one once with `head -c 32 /dev/urandom | base64 > cluster.secret; chmod 600 cluster.secret`, copy it \
         to every node, and give it as --cluster-secret-file cluster.secret (or `cluster_secret_file` in the config \
         file, or the environment variable SANDLOT_CLUSTER_SECRET)"
    }
}

/// Why a message was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not sealed with this cluster's secret for this place (forged, moved,
    /// altered, another cluster's, or not sealed at all).
    Unauthenticated,
    /// Sealed too long ago (or too far ahead), or before what the replay
    /// cache still remembers.
    Stale,
    /// Seen before.
    Replayed,
}

impl Refused {
    /// Its label in `sandlot_cluster_refused_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::Unauthenticated => "unauthenticated",
            Refused::Stale => "stale",
            Refused::Replayed => "replayed",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Unauthenticated => "not sealed with the cluster secret",
            Refused::Stale => "stale",
            Refused::Replayed => "a replay",
        })
    }
}

/// An opened message.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The node that sealed it.
    pub(crate) from: String,
    /// Its nonce: the message's own name (a reply is sealed for it).
    pub(crate) nonce: [u8; 24],
    /// When it was sealed (ms since the Unix epoch, by its sender's clock).
    pub(crate) at: u64,
    pub(crate) body: Vec<u8>,
}

/// Seals and opens this node's messages. Shared by every part of a node's
/// cluster mode.
pub(crate) struct Seal {
    cipher: XChaCha20Poly1305,
    node: String,
    seen: Mutex<Seen>,
    /// Refusals are counted here (`sandlot_cluster_refused_total`).
    metrics: Arc<Metrics>,
    /// When a refusal was last logged (ms since the Unix epoch): at most
    /// one a minute is, so a flood does not flood the log.
    logged: AtomicU64,
}

impl Seal {
    pub(crate) fn new(secret: &ClusterSecret, node: &str, metrics: Arc<Metrics>) -> Seal {
        let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"sandlot cluster secret"), &secret.0);
        let mut key = [0u8; 32];
        kdf.expand(b"sandlot seal 1: xchacha20-poly1305", &mut key).expect("32 bytes is a valid HKDF output");
        let cipher = XChaCha20Poly1305::new_from_slice(&key).expect("a 32-byte key");
        Seal { cipher, node: node.to_string(), seen: Mutex::new(Seen::default()), metrics, logged: AtomicU64::new(0) }
    }

    /// `body`, sealed for `place`.
    pub(crate) fn seal(&self, place: &str, body: &[u8]) -> bytes::Bytes {
        self.seal_at(place, body, unix_ms())
    }

    fn seal_at(&self, place: &str, body: &[u8], at: u64) -> bytes::Bytes {
        let nonce: [u8; 24] = rand::random();
        let mut header = [0u8; HEADER];
        header[0] = VERSION;
        header[1..9].copy_from_slice(&at.to_be_bytes());
        header[9..].copy_from_slice(&nonce);
        let name = self.node.as_bytes();
        let mut plain = Vec::with_capacity(1 + name.len() + body.len());
        plain.push(u8::try_from(name.len()).expect("a node's name is at most 64 bytes"));
        plain.extend_from_slice(name);
        plain.extend_from_slice(body);
        let aad = associated(&header[..9], place);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: &plain, aad: &aad })
            .expect("XChaCha20-Poly1305 seals any message a NATS server carries");
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        out.into()
    }

    /// Opens a message that may be read more than once (a stored value, a
    /// numbered frame, a queued job): authenticated for `place`, nothing more.
    pub(crate) fn open(&self, place: &str, sealed: &[u8]) -> Result<Opened, Refused> {
        self.open_sealed(place, sealed).inspect_err(|&why| self.refused(place, why))
    }

    /// Opens a message read once: authenticated for `place`, sealed within
    /// `MAX_AGE`, and never seen before.
    pub(crate) fn open_once(&self, place: &str, sealed: &[u8]) -> Result<Opened, Refused> {
        let opened = self.open_sealed(place, sealed).and_then(|opened| {
            lock(&self.seen).admit(opened.nonce, opened.at, unix_ms())?;
            Ok(opened)
        });
        opened.inspect_err(|&why| self.refused(place, why))
    }

    /// Counts (and logs, as any refusal) an operation on the bus that
    /// cannot be sealed and that no node makes: a key-value delete.
    pub(crate) fn refuse_unsealed(&self, place: &str) {
        self.refused(place, Refused::Unauthenticated);
    }

    fn refused(&self, place: &str, why: Refused) {
        self.metrics.cluster_refused(why.as_str());
        let now = unix_ms();
        let last = self.logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self.logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                place,
                "refused a message from the NATS bus: {why}. A client without the cluster secret, a node given \
                 another secret, or a node whose clock is more than {} s off uses this NATS server (at most one such \
                 warning a minute; sandlot_cluster_refused_total counts them)",
                MAX_AGE.as_secs()
            );
        }
    }

    fn open_sealed(&self, place: &str, sealed: &[u8]) -> Result<Opened, Refused> {
        if sealed.len() < HEADER + TAG + 1 || sealed[0] != VERSION {
            return Err(Refused::Unauthenticated);
        }
        let at = u64::from_be_bytes(sealed[1..9].try_into().expect("8 bytes"));
        let nonce: [u8; 24] = sealed[9..HEADER].try_into().expect("24 bytes");
        let aad = associated(&sealed[..9], place);
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &sealed[HEADER..], aad: &aad })
            .map_err(|_| Refused::Unauthenticated)?;
        let (&length, rest) = plain.split_first().ok_or(Refused::Unauthenticated)?;
        let from = rest.get(..usize::from(length)).ok_or(Refused::Unauthenticated)?;
        let from = String::from_utf8(from.to_vec()).map_err(|_| Refused::Unauthenticated)?;
        let body = rest[usize::from(length)..].to_vec();
        Ok(Opened { from, nonce, at, body })
    }
}

/// The nonce of a sealed message (a reply is sealed for it).
pub(crate) fn nonce_of(sealed: &[u8]) -> Option<[u8; 24]> {
    sealed.get(9..HEADER)?.try_into().ok()
}

/// The associated data of a message: the version and time, then its place.
fn associated(header: &[u8], place: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + header.len() + place.len());
    aad.extend_from_slice(b"sandlot seal\0");
    aad.extend_from_slice(header);
    aad.extend_from_slice(place.as_bytes());
    aad
}

/// The place of a reply to the request whose nonce is `nonce`.
pub(crate) fn reply_place(nonce: &[u8; 24]) -> String {
    let mut place = String::with_capacity(6 + 48);
    place.push_str("reply.");
    for byte in nonce {
        place.push_str(&format!("{byte:02x}"));
    }
    place
}

/// The place of a key-value entry.
pub(crate) fn entry_place(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The nonces of the messages read once within `MAX_AGE`, `REMEMBERED` at
/// most.
#[derive(Default)]
struct Seen {
    nonces: HashMap<[u8; 24], u64>,
    /// In the order they came, with their times.
    order: VecDeque<([u8; 24], u64)>,
    /// Messages sealed at or before this (ms) are refused: the newest time
    /// among the nonces forgotten to keep the bound.
    floor: u64,
}

impl Seen {
    fn admit(&mut self, nonce: [u8; 24], at: u64, now: u64) -> Result<(), Refused> {
        let window = MAX_AGE.as_millis() as u64;
        if at.saturating_add(window) < now || at > now.saturating_add(window) || at <= self.floor {
            return Err(Refused::Stale);
        }
        if self.nonces.contains_key(&nonce) {
            return Err(Refused::Replayed);
        }
        // Nonces past the window need no remembering: their messages are stale.
        while let Some(&(old, old_at)) = self.order.front() {
            if old_at.saturating_add(window) >= now && self.order.len() < REMEMBERED {
                break;
            }
            self.order.pop_front();
            self.nonces.remove(&old);
            if old_at.saturating_add(window) >= now {
                self.floor = self.floor.max(old_at);
            }
        }
        self.nonces.insert(nonce, at);
        self.order.push_back((nonce, at));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::from_text(text).unwrap()
    }

    fn seal(text: &str, node: &str) -> Seal {
        Seal::new(&secret(text), node, Arc::default())
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_message_opens_only_with_the_secret_and_at_its_place() {
        let (a, b) = (seal(SECRET, "a"), seal(SECRET, "b"));
        let sealed = a.seal("sandlot.kill.b", b"the body");
        assert!(!sealed.windows(8).any(|w| w == b"the body"), "the body is encrypted");
        let opened = b.open("sandlot.kill.b", &sealed).unwrap();
        assert_eq!((opened.from.as_str(), opened.body.as_slice()), ("a", &b"the body"[..]));
        assert_eq!(b.open("sandlot.kill.c", &sealed).unwrap_err(), Refused::Unauthenticated);
        let other = seal(&SECRET.replace('0', "x"), "c");
        assert_eq!(other.open("sandlot.kill.b", &sealed).unwrap_err(), Refused::Unauthenticated);
        let mut altered = sealed.to_vec();
        altered[3] ^= 1; // the time
        assert_eq!(b.open("sandlot.kill.b", &altered).unwrap_err(), Refused::Unauthenticated);
        assert_eq!(b.open("sandlot.kill.b", b"plain text").unwrap_err(), Refused::Unauthenticated);
    }

    #[test]
    fn a_message_read_once_is_refused_when_replayed_or_stale() {
        let seal = seal(SECRET, "a");
        let sealed = seal.seal("s", b"x");
        assert!(seal.open_once("s", &sealed).is_ok());
        assert_eq!(seal.open_once("s", &sealed).unwrap_err(), Refused::Replayed);
        let old = seal.seal_at("s", b"x", unix_ms() - MAX_AGE.as_millis() as u64 - 1000);
        assert_eq!(seal.open_once("s", &old).unwrap_err(), Refused::Stale);
        let ahead = seal.seal_at("s", b"x", unix_ms() + MAX_AGE.as_millis() as u64 + 1000);
        assert_eq!(seal.open_once("s", &ahead).unwrap_err(), Refused::Stale);
        // Read more than once by design: only authenticated.
        assert!(seal.open("s", &old).is_ok() && seal.open("s", &old).is_ok());
    }

    #[test]
    fn past_its_bound_the_replay_cache_refuses_what_it_forgot() {
        let mut seen = Seen::default();
        let now = 1_000_000;
        for i in 0..REMEMBERED as u64 {
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&i.to_be_bytes());
            seen.admit(nonce, now - 1000 + i % 10, now).unwrap();
        }
        let mut next = [1u8; 24];
        seen.admit(next, now, now).unwrap();
        assert!(seen.nonces.len() <= REMEMBERED);
        // The first nonce is forgotten; its message is refused all the same.
        assert_eq!(seen.admit([0u8; 24], now - 1000, now).unwrap_err(), Refused::Stale);
        next[0] = 2;
        assert!(seen.admit(next, now, now).is_ok());
    }

    #[test]
    fn a_short_secret_is_refused_with_how_to_make_one() {
        let refused = ClusterSecret::from_text("  short  ").unwrap_err();
        assert!(refused.contains("at least 32") && refused.contains("/dev/urandom"), "{refused}");
    }
}

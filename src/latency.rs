//! Low latency on request (`sandlot serve --low-latency`): while it is held,
//! a socket polls for its client's next message for a moment before it
//! waits, and idle CPUs poll instead of halting (Linux's PM QoS interface),
//! where the machine lets them.
//!
//! A small model call (a direct-IO prediction) is answered in tens of
//! microseconds, but between two of a client's frames the server's thread
//! idles, and an idle CPU halts. On a virtual machine a halted vCPU exits to
//! the hypervisor; its wake-up and the cold caches after it cost more than
//! the call. Measured on an Intel VM (2 vCPUs, `haltpoll` idle driver): a
//! warm Python prediction took 26 µs back to back, 84 µs after 150 µs of
//! sleep, 27 µs after 150 µs of sleep with the PM QoS request held; a
//! direct-IO round trip's median went from 265 to 108 µs (Python) and from
//! 198 to 61 µs (JavaScript).
//!
//! The PM QoS request works only through a cpuidle driver. A machine without
//! one (`/sys/devices/system/cpu/cpuidle/current_driver` is `none`, as on
//! the AMD VM of the later bench runs) halts its idle CPUs whatever is
//! asked; there only the polling helps (`Poller`): the thread that answered
//! a frame keeps polling for the next one (`SOCKET_POLL`), so the CPU never
//! idles between a client's frames that come that quickly. A game script's
//! guest thread polls the same way for its engine's answer to a command.
//!
//! The price is power: idle CPUs spin, and a socket's thread spins after
//! each answer (on a virtual machine the host sees them busy). So it is off
//! by default, for an operator who has the machine for latency-bound work.
//! The PM QoS device is root's alone; without it the sockets still poll.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;

/// The PM QoS device: while a process holds it open with a value written,
/// no CPU enters an idle state slower to leave than that many microseconds.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// Where Linux names the cpuidle driver (`none` when there is none).
const CPUIDLE_DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";

/// How long a socket polls for its next message while low latency is held:
/// longer than a quick client takes to read an answer and send its next
/// message, much shorter than a client that thinks between messages waits
/// anyway.
pub(crate) const SOCKET_POLL: Duration = Duration::from_micros(250);

/// A waiter that polls before it waits while low latency is held, and stops
/// polling where it does not pay (one per socket).
///
/// Polling pays only when the answer comes within `SOCKET_POLL` and this
/// thread keeps its CPU meanwhile: on a machine whose CPUs are busy with
/// other work, a polling thread loses its CPU and sees the answer late
/// (measured: a direct-IO round trip 3.5× slower beside one CPU-bound
/// process), and a client that thinks between messages is never caught.
/// After two polls that missed, it waits instead, and tries polling again
/// once in `PROBE_EVERY` waits.
#[derive(Default)]
pub(crate) struct Poller {
    missed: AtomicU8,
    since_poll: AtomicU32,
}

const PROBE_EVERY: u32 = 64;

impl Poller {
    /// `future`'s output; while low latency is held (and polling has not
    /// missed lately) it is polled first, yielding between polls, for up to
    /// `SOCKET_POLL`, so an answer that comes that soon finds this thread
    /// running.
    pub(crate) async fn wait<F: Future>(&self, future: F) -> F::Output {
        if !held() {
            return future.await;
        }
        let since = self.since_poll.fetch_add(1, Ordering::Relaxed) + 1;
        if self.missed.load(Ordering::Relaxed) >= 2 && since < PROBE_EVERY {
            return future.await;
        }
        self.since_poll.store(0, Ordering::Relaxed);
        let until = Instant::now() + SOCKET_POLL;
        let mut future = std::pin::pin!(future);
        let (output, caught) = loop {
            if let Some(output) = future.as_mut().now_or_never() {
                break (output, Instant::now() <= until);
            }
            if Instant::now() >= until {
                break (future.await, false);
            }
            tokio::task::yield_now().await;
        };
        let missed = if caught { 0 } else { self.missed.load(Ordering::Relaxed).saturating_add(1) };
        self.missed.store(missed, Ordering::Relaxed);
        output
    }
}

/// Holds alive, in this process.
static HOLDS: AtomicUsize = AtomicUsize::new(0);

/// Whether low latency is held in this process now.
pub(crate) fn held() -> bool {
    HOLDS.load(Ordering::Relaxed) > 0
}

/// A hold: low latency for as long as it lives.
pub struct Hold {
    /// The PM QoS device held open, or why it is not.
    device: Result<File, String>,
}

impl Hold {
    /// Low latency until this is dropped: sockets poll, and idle CPUs are
    /// asked to poll (an exit latency of 0 µs) if the device can be held.
    pub fn start() -> Self {
        HOLDS.fetch_add(1, Ordering::Relaxed);
        Hold { device: open_device() }
    }

    /// Holds it for the rest of the process (calling it again does nothing more).
    pub fn for_process() -> &'static Hold {
        static HELD: OnceLock<Hold> = OnceLock::new();
        HELD.get_or_init(Hold::start)
    }

    /// Whether the PM QoS request is held; if not, why.
    pub fn device(&self) -> Result<(), &str> {
        self.device.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Whether idle CPUs poll instead of halting; if not, why.
    pub fn idle_cpus(&self) -> Result<(), String> {
        self.device().map_err(str::to_string)?;
        match std::fs::read_to_string(CPUIDLE_DRIVER).map(|d| d.trim().to_string()) {
            Ok(driver) if driver == "none" => Err(format!(
                "this machine has no cpuidle driver ({CPUIDLE_DRIVER} is \"none\"), so its idle CPUs halt \
                 whatever is asked (on a KVM guest, the kernel option cpuidle_haltpoll.force=1 gives it one)"
            )),
            _ => Ok(()),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        HOLDS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn open_device() -> Result<File, String> {
    let mut device = File::options().write(true).open(DEVICE).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied { " (it needs root)" } else { "" };
        format!("cannot open {DEVICE}{hint}: {e}")
    })?;
    // The kernel reads one native-endian 32-bit number of microseconds.
    device.write_all(&0i32.to_ne_bytes()).map_err(|e| format!("cannot write to {DEVICE}: {e}"))?;
    Ok(device)
}

//! Low latency on request (`sandlot serve --low-latency`): while it is held,
//! a direct-IO socket polls for its client's next frame for a moment before
//! it waits, and idle CPUs poll instead of halting (Linux's PM QoS
//! interface), where the machine lets them.
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
//! asked; there only the sockets' polling helps: the thread that answered a
//! frame keeps polling for the next one (`SOCKET_POLL`), so the CPU never
//! idles between a client's frames that come that quickly.
//!
//! The price is power: idle CPUs spin, and a socket's thread spins after
//! each answer (on a virtual machine the host sees them busy). So it is off
//! by default, for an operator who has the machine for latency-bound work.
//! The PM QoS device is root's alone; without it the sockets still poll.

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The PM QoS device: while a process holds it open with a value written,
/// no CPU enters an idle state slower to leave than that many microseconds.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// Where Linux names the cpuidle driver (`none` when there is none).
const CPUIDLE_DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";

/// How long a direct-IO socket polls for its next frame after answering,
/// while low latency is held: longer than a client takes to read an answer
/// and send its next frame, much shorter than a client that thinks between
/// frames waits anyway.
pub(crate) const SOCKET_POLL: Duration = Duration::from_micros(250);

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

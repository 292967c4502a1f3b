//! Low latency on request (`sandlot serve --low-latency`): keeps idle CPUs
//! polling instead of halting, through Linux's PM QoS interface.
//!
//! A small model call (a direct-IO prediction) is answered in tens of
//! microseconds, but between two of a client's frames the server's thread
//! idles, and an idle CPU halts. On a virtual machine a halted vCPU exits to
//! the hypervisor; its wake-up and the cold caches after it cost more than
//! the call. Measured here (2 vCPUs, `haltpoll` idle driver): a warm Python
//! prediction takes 26 µs back to back, 84 µs after 150 µs of sleep, 27 µs
//! after 150 µs of sleep with this held. A direct-IO round trip's median went
//! from 265 to 108 µs (Python) and from 198 to 61 µs (JavaScript).
//!
//! The price is power: while it is held, idle CPUs of the whole machine spin
//! (on a virtual machine the host sees them busy). So it is off by default,
//! for an operator who has the machine for latency-bound work. Holding it
//! needs root (the device is root's alone); it lasts while the process runs.

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;

/// The PM QoS device: while a process holds it open with a value written,
/// no CPU enters an idle state slower to leave than that many microseconds.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// A hold: idle CPUs poll for as long as it lives.
pub struct Hold {
    _device: File,
}

impl Hold {
    /// Asks that idle CPUs poll (an exit latency of 0 µs) until this is dropped.
    pub fn new() -> Result<Self, String> {
        let mut device = File::options().write(true).open(DEVICE).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied { " (it needs root)" } else { "" };
            format!("cannot open {DEVICE}{hint}: {e}")
        })?;
        // The kernel reads one native-endian 32-bit number of microseconds.
        device.write_all(&0i32.to_ne_bytes()).map_err(|e| format!("cannot write to {DEVICE}: {e}"))?;
        Ok(Hold { _device: device })
    }

    /// Holds it for the rest of the process (calling it again does nothing more).
    pub fn for_process() -> Result<(), String> {
        static HELD: OnceLock<Hold> = OnceLock::new();
        if HELD.get().is_none() {
            let _ = HELD.set(Hold::new()?);
        }
        Ok(())
    }
}

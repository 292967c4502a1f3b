//! `sandlot:guest/engine`: a guest's synchronous round trip to the client's game engine.
//!
//! The guest blocks in this call while the face sends the command to its client
//! and awaits the answer; the call's wall-clock limit still applies, so a client
//! that never answers ends the run with a timeout.

use std::future::Future;
use std::pin::Pin;

use serde_json::value::RawValue;

use super::HostState;

/// Most bytes of JSON arguments a guest may send with one command.
const MAX_ARGS_BYTES: usize = 1 << 20;
const MAX_COMMAND_BYTES: usize = 256;

/// The engine's answer (JSON text) or its error message.
pub type EngineAnswer = Result<Box<RawValue>, String>;

/// Where a session's engine commands go. A face implements this to reach its client.
pub trait EngineBridge: Send + Sync + 'static {
    /// Sends `command` with `args` (JSON text) and resolves to the engine's answer.
    fn command(&self, command: String, args: Box<RawValue>) -> Pin<Box<dyn Future<Output = EngineAnswer> + Send + '_>>;
}

/// The bridge of a session with no engine attached: every command fails.
pub struct NoEngine;

impl EngineBridge for NoEngine {
    fn command(
        &self,
        command: String,
        _args: Box<RawValue>,
    ) -> Pin<Box<dyn Future<Output = EngineAnswer> + Send + '_>> {
        Box::pin(async move { Err(format!("no game engine is attached to this session (command {command:?})")) })
    }
}

impl super::sandlot::guest::engine::Host for HostState {
    async fn command(&mut self, command: String, args: String) -> Result<String, String> {
        if command.is_empty() || command.len() > MAX_COMMAND_BYTES {
            return Err(format!("engine command names must be 1 to {MAX_COMMAND_BYTES} bytes long"));
        }
        if args.len() > MAX_ARGS_BYTES {
            return Err(format!("engine command arguments are limited to {MAX_ARGS_BYTES} bytes"));
        }
        let args = RawValue::from_string(args).map_err(|e| format!("engine arguments are not valid JSON: {e}"))?;
        let engine = self.engine.clone();
        engine.command(command, args).await.map(|answer| answer.get().to_string())
    }
}

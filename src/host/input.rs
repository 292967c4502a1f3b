//! `sandlot:guest/input`: what the client said about the session before it started.

use super::HostState;

impl super::sandlot::guest::input::Host for HostState {
    async fn context(&mut self) -> Option<String> {
        self.context.as_ref().map(|c| c.get().to_string())
    }
}

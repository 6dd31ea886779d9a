//! The engine thread: owns an [`EngineCore`], takes commands from a channel and steps while
//! there is work. Front ends (the HTTP server) hold an [`EngineHandle`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::core::{EngineCore, EngineStats, NewRequest, OutputSink};
use crate::kv_cache::RequestId;

enum Command {
    Add(RequestId, Box<NewRequest>, Box<dyn OutputSink>),
    Abort(RequestId),
    Shutdown,
}

/// A handle to the engine thread. Cloning shares the thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    stats: Arc<EngineStats>,
    next_id: Arc<AtomicU64>,
    max_model_len: usize,
    kv_geometry: (usize, usize),
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("max_model_len", &self.max_model_len)
            .finish_non_exhaustive()
    }
}

/// Error returned when the engine thread has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the engine has stopped")]
pub struct EngineStopped;

impl EngineHandle {
    /// Start the engine thread.
    pub fn spawn(core: EngineCore) -> (EngineHandle, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel();
        let handle = EngineHandle {
            tx,
            stats: core.stats(),
            next_id: Arc::new(AtomicU64::new(1)),
            max_model_len: core.max_model_len(),
            kv_geometry: core.kv_geometry(),
        };
        let join = std::thread::Builder::new()
            .name("ferrite-engine".into())
            .spawn(move || run(core, rx))
            .expect("spawning the engine thread");
        (handle, join)
    }

    /// Submit a request; its events go to `sink`. Returns its id (for [`abort`](Self::abort))
    /// without waiting for the engine, so async callers never block on a running step.
    pub fn add(
        &self,
        req: NewRequest,
        sink: Box<dyn OutputSink>,
    ) -> Result<RequestId, EngineStopped> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Command::Add(id, Box::new(req), sink))
            .map_err(|_| EngineStopped)?;
        Ok(id)
    }

    /// Abort a request (its blocks are freed in the engine's next step).
    pub fn abort(&self, id: RequestId) {
        let _ = self.tx.send(Command::Abort(id));
    }

    /// Stop the engine thread after its current step; unfinished requests are dropped.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// Live numbers.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Longest sequence the engine accepts.
    pub fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    /// (blocks in the pool, tokens per block).
    pub fn kv_geometry(&self) -> (usize, usize) {
        self.kv_geometry
    }
}

fn run(mut core: EngineCore, rx: Receiver<Command>) {
    loop {
        // Block only when idle; otherwise take what has arrived and step.
        if !core.has_work() {
            match rx.recv() {
                Ok(cmd) => {
                    if !apply(&mut core, cmd) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            if !apply(&mut core, cmd) {
                return;
            }
        }
        core.step();
    }
}

fn apply(core: &mut EngineCore, cmd: Command) -> bool {
    match cmd {
        Command::Add(id, req, sink) => core.add_request_with_id(id, *req, sink),
        Command::Abort(id) => core.abort(id),
        Command::Shutdown => return false,
    }
    true
}

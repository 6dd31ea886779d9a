//! Activation buffers reused across forward calls (grown to the largest batch seen, never
//! shrunk), so steady-state decoding allocates nothing for activations.

/// Per-model scratch space. Shapes are set by each forward pass.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    pub o: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub sel: Vec<f32>,
    pub act: Vec<u8>,
    /// RoPE cos/sin per batch token (`T × rope_dims`), for the global and the local base:
    /// computed once per forward pass instead of once per layer and tensor.
    pub rope: Vec<f32>,
    pub rope_local: Vec<f32>,
}

//! Sampling: parameters, the seeded RNG and the sampler.

mod params;
mod rng;
mod sampler;

pub use params::SamplingParams;
pub use rng::SamplerRng;
pub use sampler::{argmax, Sampled, Sampler, TokenHistory};

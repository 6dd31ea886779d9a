//! Paged KV cache: block pool with prefix caching, per-request block tables, and the f16
//! storage the model reads through `KvStore`. Design: ../shared/docs/serving-design.md §4.

pub mod block_pool;
pub mod hash;
pub mod manager;
pub mod paged;

pub use block_pool::{BlockId, BlockPool};
pub use hash::{extend_block_hashes, hash_block, BlockHash};
pub use manager::{KvCacheManager, RequestId};
pub use paged::PagedKvStore;

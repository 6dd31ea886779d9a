//! The `ferrite` command-line tool's library side: model resolution and fetching ([`hub`]) and
//! the shared setup of models and tokenizers ([`setup`]), so integration tests can use them.

pub mod hub;
pub mod setup;

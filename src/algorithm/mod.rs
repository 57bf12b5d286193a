//! The method, as stateless primitives over caller-owned buffers, in the order a key and a
//! query meet it: the fixed rotation and codebook, encoding (optionally minus a key centre),
//! the collision search and rerank, the group retrieval of GQA, exact attention over the
//! selected rows.

pub mod attention;
pub mod center;
pub mod codebook;
pub mod encode;
pub mod estimate;
pub mod gqa;
pub mod portable;
pub mod prefetch;
pub mod rank;
pub mod rotation;
pub mod search;

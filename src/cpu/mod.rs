//! The decode step as llama.cpp's CPU op runs it: the oracle's selections (`step`,
//! `algorithm`), reorganised for speed. Every stage gives the oracle's result exactly (the
//! same candidates, top-k and rows, scores to the bit); tests hold it to that.

pub mod candidates;
pub mod collide;
pub mod estimate;
pub mod kept;
pub mod softmax;
pub mod step;
pub mod team;

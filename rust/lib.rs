//! The kernels of penchant: pure functions over slices, with no Python in them. The optional
//! `python` feature adds the PyO3 bindings in [`python`].

pub mod covisit;
pub mod decay;
pub mod diversify;
pub mod error;
pub mod filter;
pub mod novelty;
pub mod parallel;
pub mod profile;
pub mod rank;
pub mod scoring;
pub mod table;
pub mod topk;

#[cfg(feature = "python")]
mod python;

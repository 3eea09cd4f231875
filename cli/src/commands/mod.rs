//! One module per group of `berth` subcommands: each turns flags into
//! library calls and prints the result.

pub mod container;
pub mod image;
pub mod progress;
pub mod run;

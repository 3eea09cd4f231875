//! One module per `berth` subcommand: each turns flags into library calls.

pub mod run;

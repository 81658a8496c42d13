//! One module per subcommand; each has `Args` (clap) and `run`.
pub mod capture;
pub mod convert;
pub mod demo;
pub mod kvm;
pub mod merge;
pub mod sym;

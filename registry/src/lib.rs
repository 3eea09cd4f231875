//! berth's image library: everything between a Dockerfile or a registry and
//! the files `berth run IMAGE` executes. No terminal code lives here; the
//! CLI draws progress through [`client::Progress`].
//!
//! Entry points:
//! - [`Store::open`] the local OCI-layout store; [`Store::images`],
//!   [`Store::tag_image`], [`Store::resolve`], [`Store::remove`], [`Store::prune`];
//! - [`build::build`] a Dockerfile into the store → [`build::BuildOutcome`];
//! - [`client::pull`] / [`client::push`] against a registry;
//!   [`auth::login`], [`auth::logout`], [`auth::credentials_for`];
//! - [`archive::save`] / [`archive::load`] OCI-layout tars (`ctr images import` reads them);
//! - [`precompiled::attach`] / [`precompiled::list`] programs precompiled
//!   for a target, attached to an image without changing it;
//! - [`image::run_config`] what to run, [`image::program`] the program itself
//!   (for hosts embedding the runtime), [`image::inspect`] everything about an
//!   image; [`unpack::rootfs`] the directory to mount at `/`.
//!
//! Images are WebAssembly in one of three shapes ([`image::ImageFormat`]);
//! every one of them goes through all of these calls.

pub mod archive;
pub mod auth;
pub mod build;
pub mod client;
pub mod digest;
pub mod dockerfile;
pub mod error;
pub mod image;
pub mod precompiled;
pub mod reference;
pub mod store;
pub mod unpack;

pub use error::{RegistryError, Result};
pub use image::{ImageFormat, RunConfig, run_config};
pub use reference::Reference;
pub use store::Store;

//! GitHub's side of previewd: webhook signatures, the translation of deliveries into
//! previewd's events, and everything previewd says to and asks of GitHub.

pub mod api;
pub mod client;
pub mod commands;
pub mod events;
pub mod forge;
pub mod report;
pub mod resync;
pub mod signature;
pub mod texts;
pub mod user;

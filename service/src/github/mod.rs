//! GitHub's side of previewd: webhook signatures and the translation of deliveries into
//! previewd's events.

pub mod events;
pub mod signature;

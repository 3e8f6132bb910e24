//! One module per dashboard area.

pub mod index;

//! FUSE-free filesystem core.

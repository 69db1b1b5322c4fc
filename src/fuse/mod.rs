//! Thin fuser adapter.

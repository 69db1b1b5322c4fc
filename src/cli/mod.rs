//! Configuration and mount lifecycle.

//! Shared HTTP client and retry policy (to be written: see the WebDAV remote work).

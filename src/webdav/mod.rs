//! WebDAV remote (to be written).

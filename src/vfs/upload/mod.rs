//! The write-back machinery: staged content on local disk and the durable journal of uploads
//! still owed to the server. (The upload queue and the write operations of the core build on
//! these.)

pub mod conflict;
pub mod journal;
pub mod queue;
pub mod staging;

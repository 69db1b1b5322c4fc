#![allow(dead_code)]
pub mod dav;

pub mod apache;
pub mod files;
pub mod mount;

//! The embedded backend: one sled database per process, flushed by group
//! commit before anything is acknowledged.

pub mod broker;
pub mod node;

use super::StorageError;

impl From<::sled::Error> for StorageError {
    fn from(e: ::sled::Error) -> Self {
        match e {
            ::sled::Error::Io(source) => StorageError::Io {
                path: "sled".to_string(),
                source,
            },
            other => StorageError::Backend(other.to_string()),
        }
    }
}

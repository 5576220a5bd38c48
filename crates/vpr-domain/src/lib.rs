//! Wire types, validated identifiers, vocabularies and validation rules for violence-risk notices.
//!
//! This crate sits at the bottom of the dependency graph: it knows nothing of storage, HTTP or
//! configuration, so partner client code can use the same types the broker does.

pub mod audit;
pub mod figures;
pub mod ids;
pub mod notice;
pub mod subscription;
pub mod validate;
pub mod vocab;

pub use ids::{IdError, NhsNumber, OdsCode, Postcode, Telephone, Uprn};
pub use validate::{FieldError, NoticeRules};

//! The wire renderers: VPR event JSON, webhook signing and encryption, and FHIR resources. They
//! render typed decisions; nothing here decides or reads the store.

pub mod event;
pub mod fhir;
pub mod webhook;

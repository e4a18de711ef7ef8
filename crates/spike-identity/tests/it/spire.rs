//! Real-SPIRE tests (added separately).

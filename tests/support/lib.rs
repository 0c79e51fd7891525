//! Shared helpers of the system tests live in `testkit`; this crate holds only tests.

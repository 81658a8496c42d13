//! The C example is example.c; this crate only holds its tests.

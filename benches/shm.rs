//! Placeholder until the shm bench lands.
fn main() {}

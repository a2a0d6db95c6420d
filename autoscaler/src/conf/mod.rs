//! Oslo-style configuration (being written).

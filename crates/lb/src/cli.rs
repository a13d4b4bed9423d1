//! The command line (written next).

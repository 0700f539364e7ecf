//! Client for The Eye.

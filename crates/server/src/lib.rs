//! # ferrite-server: an OpenAI-compatible HTTP API over the engine

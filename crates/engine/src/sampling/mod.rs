//! Sampling (placeholder until the sampler chain lands).

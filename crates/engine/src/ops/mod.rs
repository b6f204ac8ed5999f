//! The non-matmul operations of the forward pass, on f32 activations laid out row-major
//! `[n_tokens, width]`. Weight matmuls are not here: they go through `ferrite_quant::matmul`.

mod act;
pub mod act_quant;
mod attention;
mod norm;
mod rope;

pub use act::{geglu, gelu_tanh_f16, silu, softcap, softmax_in_place, swiglu};
pub use attention::{attention, AttnParams};
pub use norm::{rms_norm, rms_norm_rows};
pub use rope::rope;

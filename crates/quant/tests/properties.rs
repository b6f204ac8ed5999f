//! Property tests of the decoders' memory behaviour, over every type:
//! - any bytes of whole blocks decode without panicking;
//! - each block's values depend on that block's bytes only (decoding a block alone gives the
//!   same bits as decoding it amid random neighbours), i.e. no decoder reads outside its block;
//! - lengths that are not whole blocks, or do not match, are errors, never partial decodes.

use ferrite_gguf::types::{TypeInfo, TYPES};
use ferrite_quant::{dequantize, type_traits, QuantError};
use proptest::prelude::*;

fn any_type() -> impl Strategy<Value = TypeInfo> {
    prop::sample::select(TYPES)
}

/// A type, a block count and random bytes for exactly that many blocks.
fn blocks() -> impl Strategy<Value = (TypeInfo, usize, Vec<u8>)> {
    (any_type(), 1usize..5).prop_flat_map(|(t, k)| {
        let n = k * t.type_size as usize;
        (Just(t), Just(k), prop::collection::vec(any::<u8>(), n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_blocks_decode_and_each_block_stands_alone((t, k, bytes) in blocks()) {
        let (bs, ts) = (t.block_size as usize, t.type_size as usize);
        let mut all = vec![0f32; k * bs];
        dequantize(t.ty, &bytes, &mut all).unwrap();
        let row = type_traits(t.ty).dequantize_row;
        let mut one = vec![0f32; bs];
        for (i, b) in bytes.chunks_exact(ts).enumerate() {
            // A fresh copy with nothing around it: any read past the block would panic.
            let alone = b.to_vec();
            (row)(&alone, &mut one);
            let same = all[i * bs..(i + 1) * bs].iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "{}: block {i} decodes differently alone", t.name);
        }
    }

    #[test]
    fn wrong_byte_counts_are_errors(t in any_type(), k in 0usize..4, delta in 1usize..300, longer: bool) {
        let (bs, ts) = (t.block_size as usize, t.type_size as usize);
        let need = k * ts;
        let len = if longer { need + delta } else { need.saturating_sub(delta) };
        prop_assume!(len != need);
        let src = vec![0x5au8; len];
        let mut out = vec![0f32; k * bs];
        let err = dequantize(t.ty, &src, &mut out).unwrap_err();
        let is_count = matches!(err, QuantError::WrongByteCount { need: n, got, .. } if n == need && got == len);
        prop_assert!(is_count, "{err}");
    }

    #[test]
    fn element_counts_off_the_block_grid_are_errors(t in any_type(), n in 1usize..2000) {
        let bs = t.block_size as usize;
        prop_assume!(n % bs != 0);
        let src = vec![0u8; (n / bs + 1) * t.type_size as usize];
        let mut out = vec![0f32; n];
        let err = dequantize(t.ty, &src, &mut out).unwrap_err();
        prop_assert!(matches!(err, QuantError::NotBlockMultiple { .. }), "{err}");
    }
}

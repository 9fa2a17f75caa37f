//! `#[serde(with = "pod")]` for the model's large arrays of plain numbers and number-only
//! structs: one length-prefixed block of their little-endian bytes instead of one serde element
//! (and one varint per integer) at a time. Loading such an array is a bounds check and a copy,
//! which took the completejourney model's load from 396 ms to 204 ms with the faster checksum
//! (RESULTS.md, session 10).
//!
//! The element types are `bytemuck::Pod` (`#[repr(C)]`, no padding, every bit pattern valid),
//! so any block of the right length decodes to valid values; a length that is not a multiple of
//! the element size is a decode error. NaN payloads and the sign of zero survive, bit for bit.

use std::fmt;
use std::marker::PhantomData;

use bytemuck::Pod;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

// The blocks are the in-memory bytes: this layout is little-endian by definition.
#[cfg(target_endian = "big")]
compile_error!("cobuy's model files store arrays as little-endian bytes");

pub fn serialize<T: Pod, S: Serializer>(values: &[T], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytemuck::cast_slice(values))
}

pub fn deserialize<'de, T: Pod, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    deserializer.deserialize_bytes(PodVisitor(PhantomData))
}

struct PodVisitor<T>(PhantomData<T>);

impl<'de, T: Pod> Visitor<'de> for PodVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a byte block of {}-byte elements",
            std::mem::size_of::<T>()
        )
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<T>, E> {
        let size = std::mem::size_of::<T>();
        if size == 0 || !bytes.len().is_multiple_of(size) {
            return Err(E::invalid_length(bytes.len(), &self));
        }
        // Copies into a freshly allocated, correctly aligned Vec<T>: the source block sits at
        // any offset of the file.
        Ok(bytemuck::pod_collect_to_vec(bytes))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        before: u8,
        #[serde(with = "super")]
        floats: Vec<f32>,
        #[serde(with = "super")]
        ints: Vec<u32>,
        #[serde(with = "super")]
        wide: Vec<i64>,
    }

    fn config() -> impl bincode::config::Config {
        bincode::config::standard()
    }

    #[test]
    fn blocks_round_trip_bit_for_bit_at_any_alignment() {
        let original = Holder {
            // One byte ahead, so every block starts unaligned in the encoded buffer.
            before: 7,
            floats: vec![1.5, -0.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE],
            ints: vec![0, 1, u32::MAX, 300],
            wide: vec![i64::MIN, -1, 1_700_000_000],
        };
        let bytes = bincode::serde::encode_to_vec(&original, config()).expect("encode");
        let (decoded, used): (Holder, usize) =
            bincode::serde::decode_from_slice(&bytes, config()).expect("decode");
        assert_eq!(used, bytes.len());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&decoded.floats), bits(&original.floats));
        assert_eq!(decoded.ints, original.ints);
        assert_eq!(decoded.wide, original.wide);
        assert_eq!(decoded.before, 7);
    }

    #[test]
    fn a_block_cut_inside_an_element_is_a_decode_error() {
        #[derive(Serialize)]
        struct Raw<'a> {
            before: u8,
            #[serde(with = "serde_bytes_shim")]
            floats: &'a [u8],
            ints: Vec<u32>,
            wide: Vec<i64>,
        }
        mod serde_bytes_shim {
            pub fn serialize<S: serde::Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
        }
        // Six bytes cannot be f32s.
        let raw = Raw {
            before: 0,
            floats: &[0, 0, 128, 63, 0, 0],
            ints: Vec::new(),
            wide: Vec::new(),
        };
        let bytes = bincode::serde::encode_to_vec(&raw, config()).expect("encode");
        let err = bincode::serde::decode_from_slice::<Holder, _>(&bytes, config())
            .expect_err("a 6-byte block of f32");
        assert!(err.to_string().contains("4-byte elements"), "{err}");
    }
}

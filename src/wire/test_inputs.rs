//! Inputs for the wire formats' property tests: JSON values as Node's messages hold them, within
//! what both of Node's serializations carry exactly (integers within 2^53, and halves, which JSON
//! text and a double both hold without rounding), and a stream cut into reads.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// The largest integer a double holds exactly, and so every JavaScript number that is one.
const MAX_SAFE: i64 = (1 << 53) - 1;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-MAX_SAFE..=MAX_SAFE).prop_map(Value::from),
        any::<i32>().prop_map(|i| Value::from(f64::from(i) + 0.5)),
        any::<String>().prop_map(Value::String),
        "[a-z]{0,8}".prop_map(Value::String),
    ]
}

/// Any value: leaves, arrays and objects, nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Cut points for a stream of `len` bytes: where it is split into the reads that bring it.
pub fn split(stream: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.iter_mut().for_each(|c| *c %= stream.len() + 1);
    cuts.sort_unstable();
    let mut reads = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        reads.push(&stream[at..cut]);
        at = cut;
    }
    reads
}

//! The codec (postcard) and its framing over bytes from another process,
//! decoded as the kinds of values programs send: values or errors, never a
//! crash or an unbounded allocation.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use ipckit::codec;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
enum Message {
    Ping,
    Job {
        id: u64,
        name: String,
        args: Vec<i64>,
    },
    Batch(Vec<(u32, Option<String>)>),
    Nested(Box<Option<Message>>),
    Map(BTreeMap<String, Vec<u8>>),
    Float(f64, char, bool),
}

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<String>(data);
    let _ = codec::decode::<Vec<u64>>(data);
    let _ = codec::decode::<HashMap<String, i64>>(data);
    let _ = codec::decode::<Message>(data);
    let _ = codec::decode::<Vec<Message>>(data);
    let _ = codec::decode::<ipckit::Error>(data);
    let _ = codec::decode::<Result<(u8, u16, u128), ipckit::Error>>(data);
    // Frames, as pipes and children's result streams carry them.
    let mut r = data;
    for _ in 0..8 {
        match codec::read_frame(&mut r, 1 << 16) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= 1 << 16);
                let _ = codec::decode::<Message>(&frame);
            }
            _ => break,
        }
    }
});

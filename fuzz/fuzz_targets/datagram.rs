//! The server's path for one UDP datagram: arbitrary bytes must never panic.
//!
//! Each input is used twice:
//!
//! 1. As a datagram, as the server gets it: `wire::peek`, then `wire::open_report` and
//!    `wire::open_ack` under the test-vector key of docs/PROTOCOL.md (bytes 0..32), and
//!    `wire::decode_legacy` (the original's datagram).
//! 2. Structure-aware: the first 24 bytes as a nonce and the rest as a body, sealed here
//!    under the same key as a report and as an acknowledgement, then opened by dynip. A
//!    mutated datagram almost never gets past the Poly1305 tag, so without this the body
//!    code (lengths, padding, name, address family) would never run.
//!
//! Whenever a datagram opens, sealing what it opened to with the same nonce must give the
//! same bytes back (round trip): every value has one encoding. Two inputs that broke this
//! are kept in fuzz/regressions/ (docs/PROTOCOL.md, "Fuzzing").

#![no_main]

use std::sync::LazyLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use dynip::model::key::Key;
use dynip::proto::wire::{self, Kind, HEADER_LEN, MAGIC, NONCE_LEN, VERSION};
use libfuzzer_sys::fuzz_target;

/// The test-vector key: bytes 0, 1, ..., 31.
static KEY: LazyLock<Key> = LazyLock::new(|| {
    let mut secret = [0u8; 32];
    for (idx, byte) in secret.iter_mut().enumerate() {
        *byte = idx as u8;
    }
    Key::from_bytes(secret)
});

/// The AEAD key `K` that HKDF derives from the test-vector key (docs/PROTOCOL.md).
const AEAD_KEY: [u8; 32] = [
    0x92, 0x79, 0x53, 0xa7, 0xa2, 0x46, 0xee, 0x9c, 0xfb, 0x04, 0xb9, 0xd2, 0xd0, 0xce, 0x66, 0x4f,
    0x19, 0xa4, 0x45, 0xfc, 0x5b, 0xc1, 0xf7, 0x66, 0xd7, 0xb2, 0x14, 0x16, 0x5e, 0xbb, 0x02, 0xda,
];

/// The harness's own sealer. Checked once against dynip's sealing of the test vector, so a
/// mistake here cannot silently keep the fuzzer out of the body code.
static CIPHER: LazyLock<XChaCha20Poly1305> = LazyLock::new(|| {
    let cipher = XChaCha20Poly1305::new(&AEAD_KEY.into());
    let mut nonce = [0u8; NONCE_LEN];
    for (idx, byte) in nonce.iter_mut().enumerate() {
        *byte = 0x40 + idx as u8;
    }
    let name = dynip::model::name::Name::parse("kitchen-pc").expect("a valid name");
    let time = dynip::model::record::Time::from_micros(1_700_000_000_000_000);
    let mut body = time.as_micros().to_be_bytes().to_vec();
    body.push(10);
    body.extend_from_slice(b"kitchen-pc");
    body.resize(wire::ACK_BODY_LEN, 0);
    assert_eq!(
        seal_with(&cipher, Kind::Report, &nonce, &body),
        wire::seal_report(&KEY, &nonce, &name, time),
        "the harness seals differently from dynip"
    );
    cipher
});

fn seal_with(
    cipher: &XChaCha20Poly1305,
    kind: Kind,
    nonce: &[u8; NONCE_LEN],
    body: &[u8],
) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(HEADER_LEN + body.len() + wire::TAG_LEN);
    datagram.extend_from_slice(&MAGIC);
    datagram.extend_from_slice(&[VERSION, kind as u8]);
    datagram.extend_from_slice(&KEY.id().0);
    datagram.extend_from_slice(nonce);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &datagram,
            },
        )
        .expect("a body under 256 GiB seals");
    datagram.extend_from_slice(&sealed);
    datagram
}

/// Everything the server does with a datagram that involves no socket, store or clock.
fn server_path(datagram: &[u8]) {
    let key = &*KEY;
    let _ = wire::peek(datagram);
    if let Ok(report) = wire::open_report(key, datagram) {
        let resealed = wire::seal_report(key, &report.nonce, &report.name, report.time);
        assert_eq!(
            resealed, datagram,
            "report {report:?} opened but seals to other bytes"
        );
    }
    if let Ok(ack) = wire::open_ack(key, datagram) {
        let nonce: [u8; NONCE_LEN] = datagram[HEADER_LEN - NONCE_LEN..HEADER_LEN]
            .try_into()
            .expect("an ack is longer than its header");
        let resealed = wire::seal_ack(key, &nonce, &ack);
        assert_eq!(
            resealed, datagram,
            "ack {ack:?} opened but seals to other bytes"
        );
    }
    let _ = wire::decode_legacy(datagram);
}

fuzz_target!(|data: &[u8]| {
    server_path(data);

    if data.len() >= NONCE_LEN {
        let (nonce, body) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        for kind in [Kind::Report, Kind::Ack] {
            server_path(&seal_with(&CIPHER, kind, &nonce, body));
        }
    }
});

//! A DNS UPDATE's way through the pure code, on arbitrary bytes: `tsig::find` and
//! `tsig::verify` under the shared key, `update::plan`, and every change applied to a
//! name's data. None may panic; a message that is not signed with the key never
//! verifies; and a plan's changes always apply or refuse whole (never more TXT records
//! at a name than dynip keeps).

#![no_main]

use std::str::FromStr;

use dynip::model::record::{Record, Time};
use dynip::model::txt::{Txt, MAX_TXT_PER_NAME};
use dynip::proto::tsig::{self, Algorithm, SigningKey};
use dynip::proto::update::{self, NameData};
use hickory_proto::op::Message;
use hickory_proto::rr::Name as DnsName;
use libfuzzer_sys::fuzz_target;

/// The test vectors' key: bytes 0 to 31.
const SECRET: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
    25, 26, 27, 28, 29, 30, 31,
];
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(signed)) = tsig::find(data) {
        // A MAC of the right key over these bytes is out of a fuzzer's reach: whatever
        // verifies here must have been signed by it (a seed does that).
        if let Ok(algorithm) = tsig::verify(&signed, Some(&SECRET), None, NOW) {
            let mut answer = signed.unsigned.clone();
            let key = SigningKey {
                name: &signed.tsig.key_name,
                algorithm,
                secret: &SECRET,
            };
            tsig::sign(&mut answer, key, Some(&signed.tsig.mac), NOW, 0, &[]);
            assert!(matches!(tsig::find(&answer), Ok(Some(_))));
        }
        let _ = tsig::verify(&signed, None, None, NOW);
        let _ = Algorithm::from_name(&signed.tsig.key_name);
    }
    let Ok(message) = Message::from_vec(data) else {
        return;
    };
    let origin = DnsName::from_str("dyn.example.com.").unwrap();
    let Ok(plan) = update::plan(&message, &origin) else {
        return;
    };
    let mut data = NameData {
        record: Some(Record::new("192.0.2.1".parse().unwrap(), Time::from_micros(1))),
        txt: vec![Txt::from_text("old").unwrap()],
    };
    for change in &plan.changes {
        if data.apply(change, Time::from_micros(2)).is_err() {
            break;
        }
        assert!(data.txt.len() <= MAX_TXT_PER_NAME);
    }
});

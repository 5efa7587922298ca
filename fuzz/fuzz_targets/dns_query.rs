//! `dynip::proto::zone::Zone::respond` on arbitrary bytes, over UDP and TCP, must never panic;
//! whatever it answers must decode again and, over UDP, fit the largest UDP answer. The
//! first byte of the input also picks the serial and the time, so stale hiding runs. The
//! zone has TXT records too.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use dynip::config::DnsConfig;
use dynip::model::name::Name;
use dynip::model::record::{Record, Time};
use dynip::model::txt::Txt;
use dynip::proto::zone::{Reply, Transport, Zone, ZoneSource, MAX_UDP_PAYLOAD};
use libfuzzer_sys::fuzz_target;

struct Table(BTreeMap<Name, Record>, BTreeMap<Name, Vec<Txt>>);

impl ZoneSource for Table {
    fn record(&self, name: &Name) -> Option<Record> {
        self.0.get(name).copied()
    }

    fn txt(&self, name: &Name) -> Vec<Txt> {
        self.1.get(name).cloned().unwrap_or_default()
    }

    fn has_below(&self, relative: &str) -> bool {
        let suffix = format!(".{relative}");
        self.0.keys().any(|name| name.folded().ends_with(&suffix))
    }
}

fn fixture() -> &'static (Zone, Table) {
    static FIXTURE: OnceLock<(Zone, Table)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = DnsConfig {
            listen: Some("127.0.0.1:53".parse().unwrap()),
            zone: Some("dyn.example.com".to_owned()),
            hide_stale: true,
            ..DnsConfig::default()
        };
        let zone = Zone::new(&config, Duration::from_secs(60)).unwrap();
        let mut hosts = BTreeMap::new();
        let mut both = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(0));
        both.apply("2001:db8::7".parse().unwrap(), Time::from_micros(30_000_000));
        hosts.insert(Name::parse("kitchen-pc").unwrap(), both);
        hosts.insert(Name::parse("pi.garage").unwrap(), both);
        let token = |text: &str| Txt::from_text(text).unwrap();
        let txt = BTreeMap::from([(
            Name::parse("_acme-challenge.kitchen-pc").unwrap(),
            vec![token("token-1"), token("token-2")],
        )]);
        (zone, Table(hosts, txt))
    })
}

fuzz_target!(|data: &[u8]| {
    let (zone, hosts) = fixture();
    let pick = data.first().copied().unwrap_or(0);
    let now = Time::from_micros(i64::from(pick) * 1_000_000);
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = zone.respond(data, transport, u32::from(pick), now, hosts, &mut out);
        match reply {
            Reply::Answer { .. } => {
                assert!(hickory_proto::op::Message::from_vec(&out).is_ok());
                if transport == Transport::Udp {
                    assert!(out.len() <= usize::from(MAX_UDP_PAYLOAD));
                }
            }
            Reply::Transfer { id, query } => {
                let txt: Vec<(Name, Vec<Txt>)> = hosts.1.clone().into_iter().collect();
                for message in zone.transfer(id, &query, 1, now, hosts.0.clone(), &txt) {
                    assert!(message.len() <= usize::from(u16::MAX));
                }
            }
            Reply::Drop => {}
        }
    }
});

//! Integration tests: the real binaries (`dynip`, `dynipd`, `dynipc`, `dynip-init`), each
//! test in its own temp dir with a scrubbed environment, servers on port 0 found through
//! their `listening udp=ADDR` line. One test binary, as `STYLE.md` asks.
//!
//! - [`peers`]: the real outside programs, found on `PATH` or skipped (see
//!   `DYNIP_REAL_PEERS`).
//! - [`harness`]: temp dirs, running commands, the server process, polling; the v1
//!   `Peer`, a NAT `Relay`, a small HTTP client and a JSON-Schema check (one file each).
//! - [`acme_dns`]: the acme-dns API (accounts by key, the latest two values, loose
//!   clients' JSON, `allowfrom`) and dyndns2's `txt=`.
//! - [`backend`]: the backend battery, each scenario on SQLite and on PostgreSQL;
//!   `copy-store` from one to the other and back.
//! - [`report`]: a report's way into the JSON file and the store; both entry points;
//!   case-insensitive names; both address families.
//! - [`garbage`]: datagrams that are not reports change nothing.
//! - [`durability`]: SIGTERM flushes, restarts keep everything, `kill -9` under load,
//!   the store's compaction keeps every host.
//! - [`files`]: corrupt JSON files and stores are left alone; the original's file is
//!   imported once.
//! - [`client`]: the client's exit codes and `--every`.
//! - [`commands`]: `init`, the server's exit codes, `demo`, flags.
//! - [`dns`]: the DNS face with the real `dig` and `kdig`.
//! - [`secondary`]: a real NSD secondary transfers the zone and follows NOTIFY.
//! - [`shared`]: several servers on one real PostgreSQL database: answers alike,
//!   replays refused across servers, `kill -9` of one and the database away under load,
//!   a client failing over, the fold, TLS, notifications delivered once (and taken over
//!   from a dead server), a staleness announced once.
//! - [`signed`]: version 1: signed reports, acknowledgements, replays, forgeries, keys,
//!   `allow_from`, the rate limit, SIGHUP, `add-host`.
//! - [`service`]: under a service manager: `sd_notify` readiness, watchdog and stopping
//!   on a real `NOTIFY_SOCKET`, priorities on lines into the journal.
//! - [`http`]: the HTTP face: dyndns2 with the real ddclient and inadyn, every answer
//!   code, router URL forms, the API, the status page, `/metrics`, TLS, limits.
//! - [`notify`]: notifications to a real webhook receiver, command and SMTP server;
//!   `kill -9` in a burst, a receiver down then up, a flapping host, bad sinks.
//! - [`update`]: RFC 2136 UPDATE with TSIG from the real nsupdate, knsupdate and
//!   ddclient; a host's key held to its names; signed queries and transfers.
//! - [`certificate`]: real certificates from Pebble to lego and certbot through RFC 2136
//!   UPDATE with a host's key (none for another host's name), the challenge's TXT
//!   records gone afterwards; and to certbot through the acme-dns API.
//! - [`windows`]: `dynip.exe` under Wine reports to the real server (with
//!   `DYNIP_WINDOWS_EXE` set; skipped otherwise).

mod acme_dns;
mod backend;
mod certificate;
mod client;
mod commands;
mod dns;
mod durability;
mod files;
mod garbage;
mod harness;
mod http;
mod notify;
mod peers;
mod report;
mod secondary;
mod service;
mod shared;
mod signed;
mod update;
mod windows;

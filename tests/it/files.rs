//! The files a server finds at start: a corrupt JSON file or store is refused and left
//! byte for byte as it was; the original's JSON file is imported into an empty store once.

use crate::harness::*;

/// The original DynIP's file: a name with the trailing newline its client's hostname had,
/// a time without microseconds as Python's `str(datetime)` writes it when they are zero.
pub const ORIGINAL: &str = r#"{"kitchen-pc\n": ["203.0.113.7", "2011-08-22 22:57:01.123456"], "nas": ["198.51.100.2", "2011-08-22 22:57:01"]}"#;

/// Runs `dynip server` to completion (it must not start): exit code and stderr.
fn refused_start(dir: &Dir) -> Output {
    let out = dir.dynip(&["server", CONFIG]);
    assert!(
        !out.stderr.contains("listening"),
        "the server started: {out:?}"
    );
    out
}

#[test]
fn corrupt_json_file_is_refused_and_left_as_it_is() {
    let cases: [(&str, &[u8]); 6] = [
        ("truncated", br#"{"a": ["1.2.3.4""#),
        ("an array", b"[1,2]"),
        ("not JSON", b"kitchen-pc 203.0.113.7\n"),
        ("a value not [ip, time]", br#"{"a": "1.2.3.4"}"#),
        ("a short entry", br#"{"a": ["1.2.3.4"]}"#),
        (
            "not UTF-8",
            b"{\"a\xff\": [\"1.2.3.4\", \"2011-08-22 22:57:01\"]}",
        ),
    ];
    for (what, bytes) in cases {
        let dir = Dir::new();
        dir.server_config("127.0.0.1", "");
        dir.write(JSON_FILE, bytes);
        let out = refused_start(&dir);
        assert_eq!(out.code, 6, "{what}: {out:?}");
        assert!(
            out.stderr.contains(JSON_FILE),
            "{what}: names the file: {out:?}"
        );
        assert_eq!(dir.read(JSON_FILE), bytes, "{what}: the file changed");
        assert!(!dir.exists("dynip.json.orig"), "{what}: a copy was made");
    }
}

#[test]
fn garbage_store_is_refused_and_left_as_it_is() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let garbage = Xorshift(0x2545_f491_4f6c_dd1d).bytes(8192);
    dir.write(STORE_FILE, &garbage);
    dir.write(JSON_FILE, ORIGINAL);

    let out = refused_start(&dir);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains(STORE_FILE), "names the file: {out:?}");
    assert_eq!(dir.read(STORE_FILE), garbage, "the store changed");
    assert_eq!(
        dir.read_string(JSON_FILE),
        ORIGINAL,
        "the JSON file changed"
    );

    let list = dir.dynip(&["list", CONFIG]);
    assert_eq!(list.code, 6, "list on a garbage store: {list:?}");
    assert!(list.stderr.contains(STORE_FILE), "{list:?}");
    assert_eq!(dir.read(STORE_FILE), garbage, "list changed the store");
}

#[test]
fn another_applications_database_is_refused_and_left_as_it_is() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    {
        let conn = rusqlite::Connection::open(dir.join(STORE_FILE)).expect("create a database");
        conn.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO notes (body) VALUES ('keep me');",
        )
        .expect("fill it");
    }
    let foreign = dir.read(STORE_FILE);

    let out = refused_start(&dir);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains(STORE_FILE), "names the file: {out:?}");
    assert_eq!(dir.read(STORE_FILE), foreign, "the database changed");
    assert!(!dir.exists(JSON_FILE), "a JSON file was written: {out:?}");

    let list = dir.dynip(&["list", "--json", CONFIG]);
    assert_eq!(
        list.code, 6,
        "list on another application's database: {list:?}"
    );
    assert_eq!(dir.read(STORE_FILE), foreign, "list changed the database");
}

#[test]
fn original_json_file_is_imported_once() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    dir.write(JSON_FILE, ORIGINAL);
    let mut server = ServerProcess::start(&dir);

    let hosts = dir.list();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    let kitchen = &hosts["kitchen-pc"];
    assert_eq!(kitchen["ipv4"]["address"], "203.0.113.7", "{kitchen}");
    assert_eq!(kitchen["last_seen"], "2011-08-22T22:57:01Z", "{kitchen}");
    assert!(kitchen["ipv6"].is_null(), "{kitchen}");
    assert_eq!(hosts["nas"]["ipv4"]["address"], "198.51.100.2");
    assert_eq!(
        dir.history("kitchen-pc"),
        [(
            "2011-08-22T22:57:01Z".to_string(),
            "203.0.113.7".to_string()
        )]
    );
    assert_eq!(dir.read_string("dynip.json.orig"), ORIGINAL, "the copy");
    let export = dir.export().expect("the JSON file");
    let expect = [
        ("kitchen-pc", "203.0.113.7", "2011-08-22 22:57:01.123456"),
        ("nas", "198.51.100.2", "2011-08-22 22:57:01.000000"),
    ]
    .map(|(name, addr, time)| (name.to_string(), (addr.to_string(), time.to_string())))
    .into();
    assert_eq!(export, expect, "rewritten in the original's format");
    assert_eq!(server.terminate(), 0);
    let listed = dir.list();
    assert_eq!(listed, hosts);

    // With hosts in the store, the JSON file is an export: an edit is not imported.
    let edited = r#"{"intruder": ["192.0.2.1", "2011-08-22 22:57:01"], "nas": ["192.0.2.2", "2011-08-22 22:57:01"]}"#;
    dir.write(JSON_FILE, edited);
    let mut server = ServerProcess::start(&dir);
    assert_eq!(dir.list(), hosts, "the edited file was imported");
    assert_eq!(
        dir.read_string("dynip.json.orig"),
        ORIGINAL,
        "the copy changed"
    );
    assert_eq!(server.terminate(), 0);
    assert_eq!(dir.export().expect("the JSON file"), expect);
}

/// The original's file was case-sensitive: a machine renamed from `kitchen-pc` to
/// `Kitchen-PC` left two entries. Imported, they are one host, whose address is the one
/// of its latest report.
#[test]
fn import_of_names_differing_in_case_keeps_the_latest_report() {
    let original = r#"{"Kitchen-PC": ["203.0.113.9", "2012-01-01 00:00:00.000001"], "kitchen-pc": ["203.0.113.7", "2011-01-01 00:00:00.000001"]}"#;
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    dir.write(JSON_FILE, original);
    let mut server = ServerProcess::start(&dir);

    let hosts = dir.list();
    assert_eq!(hosts.len(), 1, "one host: {hosts:?}");
    let host = hosts.values().next().expect("one host");
    assert_eq!(host["ipv4"]["address"], "203.0.113.9", "the latest: {host}");
    assert_eq!(host["last_seen"], "2012-01-01T00:00:00Z", "{host}");
    assert_eq!(dir.history("KITCHEN-PC").len(), 2);
    let export = dir.export().expect("the JSON file");
    assert_eq!(export.len(), 1, "{export:?}");
    let (addr, time) = export.values().next().expect("one entry");
    assert_eq!(
        (addr.as_str(), time.as_str()),
        ("203.0.113.9", "2012-01-01 00:00:00.000001"),
        "the JSON file lost the latest report"
    );
    assert_eq!(dir.read_string("dynip.json.orig"), original);
    assert_eq!(server.terminate(), 0);
}

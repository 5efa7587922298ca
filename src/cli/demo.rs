//! `dynip demo`: a server and a client on loopback with a throwaway store.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::hosts::list_table;
use super::{client_name, print, report_once, runtime};
use crate::config::{BindHost, ClientConfig, ServerConfig};
use crate::error::Error;
use crate::model::key::Key;
use crate::model::name::Name;
use crate::server::Server;
use crate::store::Store;

/// Runs a server on loopback with a throwaway store, reports to it once with the client's
/// own code, and prints what the server recorded: the table and the original's JSON file.
pub(super) fn demo() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("dynip-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::NotWritable {
        path: dir.clone(),
        source,
    })?;
    let res = demo_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn demo_in(dir: &Path) -> Result<(), Error> {
    let key = Key::generate();
    let server_config = ServerConfig {
        server_ip: BindHost::Addr([127, 0, 0, 1].into()),
        server_port: 0,
        client_log_path: dir.join("dynip.json"),
        store_path: dir.join("dynip.sqlite3"),
        key: Some(key.clone()),
        ..ServerConfig::default()
    };
    runtime()?.block_on(async {
        let server = Server::open(&server_config)?;
        let addr = server.udp_addrs()[0];
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(server.run(shutdown.clone()));
        print(
            &(format!(
                "server: listening on udp {addr}, store {}",
                server_config.store_path.display()
            ) + "\n"),
        )?;

        let client_config = ClientConfig {
            server_hostname: addr.ip().to_string(),
            server_port: addr.port(),
            hostname: None,
            key: Some(key),
        };
        let config_path = dir.join("(demo)");
        let name = client_name(&config_path, &client_config)
            .or_else(|_| Name::parse("demo-host").map_err(|e| Error::Internal(e.to_string())))?;
        let acked = report_once(&client_config, &name, &config_path).await;
        shutdown.cancel();
        running
            .await
            .map_err(|e| Error::Internal(format!("server task failed: {e}")))??;
        let acked = acked?;
        for ack in &acked {
            print(
                &(format!(
                    "client: reported as {name}, signed; acknowledged by {}: seen as {}",
                    ack.server, ack.seen
                ) + "\n"),
            )?;
        }

        let store = Store::open_read_only(&server_config.store_path)?;
        let hosts = store.load()?.hosts;
        print("\n$ dynip list CONFIG\n")?;
        print(&list_table(
            hosts.iter().map(|(name, entry)| (name, &entry.record)),
        ))?;
        let exported = std::fs::read_to_string(&server_config.client_log_path).unwrap_or_default();
        print(
            &(format!(
                "\n$ cat {}  (the original DynIP format)",
                server_config.client_log_path.display()
            ) + "\n"),
        )?;
        print(&format!("{exported}\n"))?;
        Ok(())
    })
}

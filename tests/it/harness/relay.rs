//! A NAT between client and server, for the tests of what the server sees.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A UDP relay between clients and a server, as a NAT is: the server sees the relay's
/// upstream address and port, not the client's. Stops on drop.
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Relays between `127.0.0.1:0` (clients) and `server`, from another `127.0.0.1:0`.
    pub fn start(server: SocketAddr) -> Relay {
        let downstream = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        let upstream = UdpSocket::bind("127.0.0.1:0").expect("bind the relay's upstream");
        let addr = downstream.local_addr().expect("relay address");
        let upstream_addr = upstream.local_addr().expect("relay upstream address");
        // A short timeout only so the threads notice `stop`.
        for socket in [&downstream, &upstream] {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("set a read timeout");
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let downstream = Arc::new(downstream);
        let upstream = Arc::new(upstream);
        let forward = {
            let (downstream, upstream) = (Arc::clone(&downstream), Arc::clone(&upstream));
            let (stop, client) = (Arc::clone(&stop), Arc::clone(&client));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = downstream.recv_from(&mut buf) {
                        *client.lock().expect("client lock") = Some(from);
                        let _ = upstream.send_to(&buf[..len], server);
                    }
                }
            })
        };
        let back = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, _)) = upstream.recv_from(&mut buf) {
                        let to = *client.lock().expect("client lock");
                        if let Some(to) = to {
                            let _ = downstream.send_to(&buf[..len], to);
                        }
                    }
                }
            })
        };
        Relay {
            addr,
            upstream: upstream_addr,
            stop,
            threads: vec![forward, back],
        }
    }

    /// Where clients send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server sees as the source of every relayed datagram.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

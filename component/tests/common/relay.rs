//! A TCP relay between the component and its server, so that a test can
//! cut the component's link while the server and every client stay up.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Both ends of every link, to cut them.
    links: Mutex<Vec<TcpStream>>,
    /// While set, new links are accepted but not carried through.
    held: AtomicBool,
    stopped: AtomicBool,
}

impl Relay {
    /// Listens on a free port and carries every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    while s.held.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(20));
                    }
                    if let Err(e) = carry(&s, down, upstream) {
                        eprintln!("relay: {e}");
                    }
                });
            }
        });
        Relay { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every link now.
    pub fn cut(&self) {
        for link in self.shared.links.lock().unwrap().drain(..) {
            let _ = link.shutdown(Shutdown::Both);
        }
    }

    /// Makes new links wait (until [`release`](Self::release)): the
    /// component's next connection hangs as if the server were unreachable.
    pub fn hold(&self) {
        self.shared.held.store(true, Ordering::SeqCst);
    }

    pub fn release(&self) {
        self.shared.held.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.release();
        self.cut();
        // Wakes the accepting thread so that it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn carry(s: &Shared, down: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let up = TcpStream::connect(upstream)?;
    {
        let mut links = s.links.lock().unwrap();
        links.push(down.try_clone()?);
        links.push(up.try_clone()?);
    }
    let (mut down_r, mut up_w) = (down.try_clone()?, up.try_clone()?);
    let one_way = thread::spawn(move || {
        let _ = io::copy(&mut down_r, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Both);
    });
    let (mut up_r, mut down_w) = (up, down);
    let _ = io::copy(&mut up_r, &mut down_w);
    let _ = down_w.shutdown(Shutdown::Both);
    let _ = one_way.join();
    Ok(())
}

//! A TCP relay between the component and its server, so that a test can
//! cut the component's link, or freeze it (a half-open link, a server that
//! stopped reading), while the server and every client stay up.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Which way a frozen link stops carrying bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// From the component to the server.
    Up = 1,
    /// From the server to the component.
    Down = 2,
    Both = 3,
}

#[derive(Default)]
struct Shared {
    /// Every link carried now.
    links: Mutex<Vec<Link>>,
    /// While set, new links are accepted but not carried through.
    held: AtomicBool,
    /// Set, new links freeze that way once these bytes have passed.
    freeze_after: Mutex<Option<(Way, &'static [u8])>>,
    stopped: AtomicBool,
}

/// Both ends of one link, and what it carries.
struct Link {
    ends: [TcpStream; 2],
    state: Arc<LinkState>,
}

#[derive(Default)]
struct LinkState {
    /// The [`Way`]s it does not carry now, as bits.
    frozen: AtomicU8,
    cut: AtomicBool,
}

impl LinkState {
    /// Waits while `way` is frozen; false once the link is cut.
    fn wait(&self, way: Way) -> bool {
        while self.frozen.load(Ordering::SeqCst) & way as u8 != 0 {
            if self.cut.load(Ordering::SeqCst) {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        !self.cut.load(Ordering::SeqCst)
    }
}

impl Relay {
    /// Listens on a free port and carries every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        Relay::start_with(upstream, None)
    }

    /// [`start`](Self::start), with a receive buffer of `bytes` on the
    /// component's side, so that what a frozen link holds is little and
    /// the component's writes block soon.
    pub fn with_small_buffer(upstream: SocketAddr, bytes: i32) -> Relay {
        Relay::start_with(upstream, Some(bytes))
    }

    fn start_with(upstream: SocketAddr, buffer: Option<i32>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        if let Some(bytes) = buffer {
            use std::os::fd::AsRawFd;
            // SAFETY: setsockopt(2) on a socket we own, with a valid int.
            let set = unsafe {
                libc::setsockopt(
                    listener.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    (&bytes as *const i32).cast(),
                    std::mem::size_of::<i32>() as libc::socklen_t,
                )
            };
            assert_eq!(set, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
        }
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
            link.state.cut.store(true, Ordering::SeqCst);
            for end in &link.ends {
                let _ = end.shutdown(Shutdown::Both);
            }
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

    /// Stops carrying bytes `way` on the links there are now, without
    /// closing them: neither end hears of it, and what one end writes
    /// piles up in the socket buffers until its writes block. Links made
    /// later are carried as usual.
    pub fn freeze(&self, way: Way) {
        for link in self.shared.links.lock().unwrap().iter() {
            link.state.frozen.store(way as u8, Ordering::SeqCst);
        }
    }

    /// Makes every link from now on freeze `way` (as [`freeze`](Self::freeze))
    /// once `marker` has passed that way: `Way::Up` after `</handshake>`
    /// holds back all the component writes once connected.
    pub fn freeze_new_links_after(&self, way: Way, marker: &'static [u8]) {
        *self.shared.freeze_after.lock().unwrap() = Some((way, marker));
    }

    /// Carries again what [`freeze`](Self::freeze) held back.
    pub fn thaw(&self) {
        for link in self.shared.links.lock().unwrap().iter() {
            link.state.frozen.store(0, Ordering::SeqCst);
        }
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
    let state = Arc::new(LinkState::default());
    s.links.lock().unwrap().push(Link {
        ends: [down.try_clone()?, up.try_clone()?],
        state: state.clone(),
    });
    let (down_r, up_w) = (down.try_clone()?, up.try_clone()?);
    let after = *s.freeze_after.lock().unwrap();
    let marker = |w: Way| after.and_then(|(way, m)| (way == w).then_some(m));
    let (st, up_marker) = (state.clone(), marker(Way::Up));
    let one_way = thread::spawn(move || copy(down_r, up_w, &st, Way::Up, up_marker));
    copy(up, down, &state, Way::Down, marker(Way::Down));
    let _ = one_way.join();
    Ok(())
}

/// Carries bytes one way until either end closes or the link is cut;
/// while that way is frozen, it neither reads nor writes. With a `marker`,
/// the way freezes once the marker has passed.
fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    state: &LinkState,
    way: Way,
    mut marker: Option<&[u8]>,
) {
    let mut buf = vec![0; 16 * 1024];
    // What has passed, while the marker is awaited.
    let mut passed = Vec::new();
    while state.wait(way) {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        if let Some(m) = marker {
            let before = passed.len();
            passed.extend_from_slice(chunk);
            if let Some(at) = passed.windows(m.len()).position(|w| w == m) {
                let end = at + m.len() - before;
                if to.write_all(&chunk[..end]).is_err() {
                    break;
                }
                chunk = &chunk[end..];
                state.frozen.fetch_or(way as u8, Ordering::SeqCst);
                marker = None;
            }
        }
        if !state.wait(way) || to.write_all(chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

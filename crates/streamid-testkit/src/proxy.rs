//! [`TcpProxy`]: a loopback TCP proxy the tests control, for fault injection.
//!
//! It owns the connections between clients and one target (a PostgreSQL server, say) and
//! breaks them on request: [`cut_all`](TcpProxy::cut_all) drops every current connection,
//! [`pause`](TcpProxy::pause) refuses new ones, [`blackhole`](TcpProxy::blackhole) stops
//! forwarding bytes without closing anything (a network partition), and
//! [`blackhole_replies`](TcpProxy::blackhole_replies) does that for the target's replies
//! only — the way to make a COMMIT succeed on the server while the client never hears so.
//!
//! Plain threads and blocking sockets, no runtime: the proxy works the same from sync tests
//! (which drive worker processes) and from async ones, and every control call takes effect
//! before it returns. Two threads per connection forward the two directions; a held
//! direction reads at most one chunk and then waits, so the kernel's buffers fill and TCP
//! pushes back, exactly as when packets stop flowing — nothing is dropped or reordered, and
//! lifting the blackhole delivers everything held, in order.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// How long connecting to the target may take before the client's connection is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes moved per read.
const CHUNK: usize = 16 * 1024;

/// A loopback TCP proxy in front of one target, with switches to break its connections.
///
/// Listens on a free port of 127.0.0.1; point clients at [`port`](Self::port) instead of
/// the target's. Dropping the proxy stops listening and cuts every connection.
///
/// ```no_run
/// # fn demo() -> Result<(), streamid_testkit::Error> {
/// use streamid_testkit::{PgServer, TcpProxy};
///
/// let server = PgServer::start()?;
/// let proxy = TcpProxy::start(("127.0.0.1", server.port()))?;
/// let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
/// // ... clients connect to `url` ...
/// proxy.blackhole(true); // a partition: connections stay open, nothing moves
/// proxy.cut_all(); // and now they are gone
/// proxy.blackhole(false); // new connections work again
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// Signalled when a switch flips or a connection is cut.
    changed: Condvar,
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    paused: bool,
    /// Client → target bytes are held.
    hold_requests: bool,
    /// Target → client bytes are held.
    hold_replies: bool,
    next_id: u64,
    links: HashMap<u64, Link>,
}

/// One proxied connection: clones of both sockets (to shut them down from outside) and its
/// cut flag, which its forwarding threads check.
#[derive(Debug)]
struct Link {
    client: TcpStream,
    target: TcpStream,
    cut: Arc<AtomicBool>,
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Request,
    Reply,
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] if `target` does not resolve or nothing can be bound.
    pub fn start(target: impl ToSocketAddrs) -> Result<TcpProxy, Error> {
        let target = target
            .to_socket_addrs()
            .map_err(|e| Error::io("resolving the proxy's target", e))?
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Io, "the proxy's target resolves to nothing"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("binding the proxy to 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the proxy's port", e))?;
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-accept-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &accepting))
            .map_err(|e| Error::io("starting the proxy thread", e))?;
        Ok(TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The port clients connect to, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The target every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Drops every current connection, both directions at once: both sockets are shut down
    /// and closed with `SO_LINGER` 0, so the client and the target see the connection end
    /// (EOF, then a reset) without any goodbye, and bytes held by a blackhole are lost.
    /// New connections are unaffected. Returns how many were cut.
    pub fn cut_all(&self) -> usize {
        let links: Vec<Link> = self.shared.lock().links.drain().map(|(_, l)| l).collect();
        for link in &links {
            link.cut.store(true, Ordering::Release);
            for socket in [&link.client, &link.target] {
                abort(socket);
            }
        }
        self.shared.changed.notify_all();
        self.shared
            .cut
            .fetch_add(links.len() as u64, Ordering::Relaxed);
        links.len()
    }

    /// Refuses new connections (each is accepted and reset at once) until
    /// [`resume`](Self::resume); current connections keep working.
    pub fn pause(&self) {
        self.shared.lock().paused = true;
    }

    /// Accepts new connections again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared.lock().paused = false;
    }

    /// `true`: stop forwarding bytes in both directions without closing anything, like a
    /// network partition (new connections are accepted but stall too); `false`: deliver
    /// what was held, in order, and forward again.
    pub fn blackhole(&self, on: bool) {
        let mut state = self.shared.lock();
        state.hold_requests = on;
        state.hold_replies = on;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// As [`blackhole`](Self::blackhole) for the target's replies only: requests still
    /// arrive and run, their answers never reach the client (until `false`, or a cut).
    pub fn blackhole_replies(&self, on: bool) {
        self.shared.lock().hold_replies = on;
        self.shared.changed.notify_all();
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.lock().links.len()
    }

    /// Connections accepted and forwarded so far (refused ones not counted).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused while paused, or because the target could not be reached.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Connections dropped by [`cut_all`](Self::cut_all) so far.
    pub fn cut_count(&self) -> u64 {
        self.shared.cut.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        // Wake the blocking accept; it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.cut_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain flags and sockets: still consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits while `direction` is held; `false` once the connection is cut or the proxy
    /// stops (the chunk in hand is then dropped).
    fn may_forward(&self, direction: Direction, cut: &AtomicBool) -> bool {
        let mut state = self.lock();
        loop {
            if cut.load(Ordering::Acquire) || state.stopping {
                return false;
            }
            let held = match direction {
                Direction::Request => state.hold_requests,
                Direction::Reply => state.hold_replies,
            };
            if !held {
                return true;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let (stopping, paused) = {
            let state = shared.lock();
            (state.stopping, state.paused)
        };
        if stopping {
            return;
        }
        if paused {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            abort(&client);
            continue;
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("proxy-link".into())
            .spawn(move || link(client, &shared));
        if let Err(e) = spawned {
            eprintln!("streamid-testkit proxy: cannot start a connection thread: {e}");
        }
    }
}

/// Connects `client` to the target and forwards until either side ends or a cut.
fn link(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(target) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        abort(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let clones = (
        client.try_clone(),
        target.try_clone(),
        client.try_clone(),
        target.try_clone(),
    );
    let (Ok(client_ctl), Ok(target_ctl), Ok(client_out), Ok(target_in)) = clones else {
        abort(&client);
        abort(&target);
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let id = {
        let mut state = shared.lock();
        if state.stopping {
            drop(state);
            abort(&client);
            abort(&target);
            return;
        }
        state.next_id += 1;
        let id = state.next_id;
        state.links.insert(
            id,
            Link {
                client: client_ctl,
                target: target_ctl,
                cut: Arc::clone(&cut),
            },
        );
        id
    };
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    // The last of the two forwarding threads to end forgets the link.
    let running = Arc::new(AtomicUsize::new(2));
    let replies = {
        let (shared, cut, running) = (Arc::clone(shared), Arc::clone(&cut), Arc::clone(&running));
        std::thread::Builder::new()
            .name("proxy-replies".into())
            .spawn(move || {
                pump(target_in, client_out, Direction::Reply, &shared, &cut);
                finish(&shared, id, &running);
            })
    };
    if replies.is_err() {
        running.fetch_sub(1, Ordering::AcqRel);
        cut.store(true, Ordering::Release);
        abort(&client);
        abort(&target);
    }
    pump(client, target, Direction::Request, shared, &cut);
    finish(shared, id, &running);
}

/// Forwards `from` → `to` until EOF, an error or a cut. On EOF the other side gets EOF too
/// (half-close); on an error or a cut both sockets are shut down.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    direction: Direction,
    shared: &Shared,
    cut: &AtomicBool,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if !shared.may_forward(direction, cut) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    abort(&from);
    abort(&to);
}

fn finish(shared: &Shared, id: u64, running: &AtomicUsize) {
    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
        shared.lock().links.remove(&id);
    }
}

/// Ends a connection abruptly: no linger (the final close sends a reset instead of waiting
/// to deliver queued bytes), and a shutdown that wakes every thread blocked on the socket.
fn abort(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
    let _ = socket.shutdown(Shutdown::Both);
}

//! A real HTTP receiver on 127.0.0.1 for hook tests: records every request and answers as
//! scripted — success, any status, slowly, with a reset connection, or by echoing the
//! verification challenge. Written on raw TCP so it can misbehave in ways a framework won't.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Echo a verification challenge on GET, 200 on POST.
    Ok,
    Status(u16),
    /// Status with extra headers (e.g. Retry-After).
    StatusWith(u16, Vec<(String, String)>),
    /// Wait, then 200.
    Slow(Duration),
    /// Reset the connection (TCP RST) without answering.
    Reset,
    /// Answer the verification GET with this body instead of the echo.
    VerifyBody(String),
    /// This status and JSON body (inline hook answers).
    Json(u16, String),
    /// Wait, then answer with this status and body.
    SlowJson(Duration, u16, String),
}

/// Computes the answer from the request (inline hooks that look at what they were sent).
pub type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    #[allow(dead_code)]
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request was read.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Event uuids in a delivery body.
    pub fn uuids(&self) -> Vec<String> {
        haken_hooks::envelope::event_uuids(&self.json())
    }
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Reply>,
    seen: Vec<Recorded>,
    /// Answers when the script is empty (before the default of [`Reply::Ok`]).
    responder: Option<Responder>,
    /// Requests being answered now, and the most there ever were at once.
    open: usize,
    most_open: usize,
    /// Connections accepted.
    accepted: usize,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Down means down: the listener and every open (pooled) connection go away.
        self.task.abort();
        if let Ok(conns) = self.connections.lock() {
            conns.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0").await
    }

    /// Listens on `addr` (a fixed port lets a test bring a receiver back after an outage).
    pub async fn start_on(addr: &str) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("receiver binds");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                if let Ok(mut sh) = s.lock() {
                    sh.accepted += 1;
                }
                let s = s.clone();
                let handle = tokio::spawn(async move {
                    let _ = serve(sock, s).await;
                });
                if let Ok(mut c) = conns.lock() {
                    c.push(handle.abort_handle());
                }
            }
        });
        Receiver { url, shared, task, connections }
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").trim_end_matches("/hook").to_owned()
    }

    /// Answers the next requests in this order, then with [`Reply::Ok`].
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        if let Ok(mut s) = self.shared.lock() {
            s.script.extend(replies);
        }
    }

    /// Answers every request the script does not cover with `f(request)`.
    pub fn respond_with(&self, f: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        if let Ok(mut s) = self.shared.lock() {
            s.responder = Some(Arc::new(f));
        }
    }

    /// Answers every request the script does not cover with this status and JSON body.
    pub fn always_json(&self, status: u16, body: &str) {
        let body = body.to_owned();
        self.respond_with(move |_| Reply::Json(status, body.clone()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().map(|s| s.seen.clone()).unwrap_or_default()
    }

    pub fn posts(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == "POST").collect()
    }

    /// Waits until `cond` holds for the POSTs received (or panics after `secs`).
    pub async fn wait_posts(&self, secs: u64, cond: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let posts = self.posts();
            if cond(&posts) {
                return posts;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "receiver did not get the expected deliveries; got {}",
                posts.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The most requests this receiver was answering at one time.
    pub fn most_at_once(&self) -> usize {
        self.shared.lock().map(|s| s.most_open).unwrap_or(0)
    }

    /// Requests being answered right now.
    pub fn open_now(&self) -> usize {
        self.shared.lock().map(|s| s.open).unwrap_or(0)
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.lock().map(|s| s.accepted).unwrap_or(0)
    }

    /// All event uuids received, in arrival order (duplicates kept).
    pub fn uuids(&self) -> Vec<String> {
        self.posts().iter().flat_map(Recorded::uuids).collect()
    }
}

async fn serve(mut sock: TcpStream, shared: Arc<Mutex<Shared>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))).collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[body_start..body_start + len].to_vec();
        buf.drain(..body_start + len);
        let challenge = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-okta-verification-challenge"))
            .map(|(_, v)| v.clone());
        let reply = {
            let Ok(mut s) = shared.lock() else { return Ok(()) };
            let rec = Recorded { method: method.clone(), path, headers, body, at: std::time::Instant::now() };
            let reply = match s.script.pop_front() {
                Some(r) => r,
                None => s.responder.as_ref().map(|f| f(&rec)).unwrap_or(Reply::Ok),
            };
            s.seen.push(rec);
            s.open += 1;
            s.most_open = s.most_open.max(s.open);
            reply
        };
        let answered = answer(&mut sock, &method, challenge, reply).await;
        if let Ok(mut s) = shared.lock() {
            s.open = s.open.saturating_sub(1);
        }
        if !answered? {
            return Ok(());
        }
    }
}

/// Writes the answer `reply` calls for; `false`: the connection is to be dropped.
async fn answer(sock: &mut TcpStream, method: &str, challenge: Option<String>, reply: Reply) -> std::io::Result<bool> {
    let (status, extra, body) = match reply {
        Reply::Reset => {
            // Linger 0: closing sends a TCP RST, not a FIN, as a crashed or hostile peer would.
            sock.set_zero_linger()?;
            return Ok(false);
        }
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            (200, Vec::new(), String::new())
        }
        Reply::Status(s) => (s, Vec::new(), String::new()),
        Reply::StatusWith(s, h) => (s, h, String::new()),
        Reply::VerifyBody(b) => (200, Vec::new(), b),
        Reply::Json(s, b) => (s, Vec::new(), b),
        Reply::SlowJson(d, s, b) => {
            tokio::time::sleep(d).await;
            (s, Vec::new(), b)
        }
        Reply::Ok => match (method, challenge) {
            ("GET", Some(c)) => (200, Vec::new(), format!("{{\"verification\":\"{c}\"}}")),
            _ => (200, Vec::new(), String::new()),
        },
    };
    let mut resp =
        format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n", body.len());
    for (k, v) in extra {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    sock.write_all(resp.as_bytes()).await?;
    Ok(true)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

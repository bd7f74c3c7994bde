//! A tiny HTTP/1.1 server on a free loopback port for unit tests of the DAV clients: it
//! records each request's method, path and headers and answers with what the test says.
//! It stands in only for what these tests check (the headers that reach a server); the
//! servers themselves (Radicale, SabreDAV, the esn double) are exercised in tests/it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `GET`, `PUT`, `ITIP`…
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
}

/// The answer for a request: status and body (JSON or XML, as the test needs).
pub type Answer = Box<dyn Fn(&Recorded) -> (u16, String) + Send + Sync>;

/// A running recorder; stops with the test's runtime.
pub struct Recorder {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    /// Starts a recorder answering every request with `answer`.
    pub async fn start(answer: Answer) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (seen, answer) = (seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    let (status, body) = answer(&request);
                    seen.lock().unwrap().push(request);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Recorder { base, requests }
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Asserts that at least one request came and every one carried mailetd's User-Agent.
    pub fn assert_user_agent(&self) {
        let requests = self.requests();
        assert!(!requests.is_empty(), "no request reached the server");
        for r in requests {
            assert_eq!(
                r.headers.get("user-agent").map(String::as_str),
                Some(super::USER_AGENT),
                "{} {}",
                r.method,
                r.path
            );
        }
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Recorded> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let complete = |data: &[u8]| {
        if chunked {
            data[head_end..].ends_with(b"0\r\n\r\n")
        } else {
            data.len() >= head_end + length
        }
    };
    while !complete(&data) {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(Recorded {
        method,
        path,
        headers,
    })
}

//! A real HTTP webhook receiver for the tests, on its own port and thread, that can be taken
//! down, made to fail, made slow, or made to acknowledge too late (so the broker sends again).
//! It records every request; what it processed is de-duplicated by event id, as a real
//! receiver would.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Processes the event and answers 200 at once.
    Ack,
    /// Answers with this status without processing.
    Fail(u16),
    /// Hangs this long without processing (the broker times out first).
    Hang(Duration),
    /// Processes the event, then answers 200 only after this long (past the broker's timeout,
    /// so the broker sends it again and it is acknowledged twice).
    AckLate(Duration),
    /// Answers 200 but loses the event (a receiver that failed after acknowledging).
    AckAndLose,
    /// Answers 307 to the receiver on this loopback port, without processing.
    Redirect(u16),
    /// Processes the event and answers 200, then sends a body that never ends, a little at a
    /// time (the broker must take the status and go, never wait for the body).
    EndlessBody,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub event_id: String,
    pub number: i64,
    pub subscription: String,
    pub attempt: String,
    pub content_type: String,
    pub body: String,
    pub processed: bool,
    pub signature: String,
}

struct Inner {
    mode: Mode,
    hits: Vec<Hit>,
}

pub struct Receiver {
    pub port: u16,
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: Mutex<Option<(ServerHandle, std::thread::JoinHandle<()>)>>,
}

async fn handle(req: HttpRequest, body: web::Bytes, inner: web::Data<Arc<Mutex<Inner>>>) -> HttpResponse {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mode = inner.lock().unwrap().mode;
    let processed = matches!(mode, Mode::Ack | Mode::AckLate(_) | Mode::EndlessBody);
    inner.lock().unwrap().hits.push(Hit {
        event_id: header("vpr-event-id"),
        number: header("vpr-event-number").parse().unwrap_or(-1),
        subscription: header("vpr-subscription-id"),
        attempt: header("vpr-delivery-attempt"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
        processed,
        signature: header("vpr-jws"),
    });
    match mode {
        Mode::Ack | Mode::AckAndLose => HttpResponse::Ok().finish(),
        Mode::Fail(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body("receiver failing")
        }
        Mode::Hang(d) | Mode::AckLate(d) => {
            actix_web::rt::time::sleep(d).await;
            HttpResponse::Ok().finish()
        }
        Mode::EndlessBody => {
            let chunks = futures_util::stream::unfold((), |()| async {
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
                Some((Ok::<_, std::io::Error>(web::Bytes::from_static(&[b'x'; 4096])), ()))
            });
            HttpResponse::Ok().streaming(chunks)
        }
        Mode::Redirect(port) => HttpResponse::TemporaryRedirect()
            .insert_header(("Location", format!("http://127.0.0.1:{port}/vpr/events")))
            .finish(),
    }
}

impl Receiver {
    /// Starts a receiver on a free loopback port, answering `Ack`.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let r = Self {
            port,
            url: format!("http://127.0.0.1:{port}/vpr/events"),
            inner: Arc::new(Mutex::new(Inner { mode: Mode::Ack, hits: Vec::new() })),
            server: Mutex::new(None),
        };
        r.up();
        r
    }

    /// Brings the receiver (back) up on its port.
    pub fn up(&self) {
        let inner = self.inner.clone();
        let port = self.port;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix_web::rt::System::new();
            sys.block_on(async move {
                let data = web::Data::new(inner);
                let deadline = Instant::now() + Duration::from_secs(10);
                // The port may linger briefly after the receiver went down.
                let server = loop {
                    let d = data.clone();
                    match HttpServer::new(move || App::new().app_data(d.clone()).default_service(web::to(handle)))
                        .workers(1)
                        .shutdown_timeout(0)
                        .bind(("127.0.0.1", port))
                    {
                        Ok(s) => break s.run(),
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("receiver cannot bind {port}: {e}"),
                    }
                };
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            });
        });
        let handle = rx.recv_timeout(Duration::from_secs(15)).expect("receiver started");
        *self.server.lock().unwrap() = Some((handle, thread));
    }

    /// Takes the receiver down: nothing listens on its port.
    pub fn down(&self) {
        let taken = self.server.lock().unwrap().take();
        if let Some((handle, thread)) = taken {
            futures_executor(handle.stop(false));
            let _ = thread.join();
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = mode;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// The event numbers processed, in arrival order, each once (the first time its id arrived).
    pub fn deduplicated(&self) -> Vec<i64> {
        let mut seen = HashSet::new();
        self.hits().into_iter().filter(|h| h.processed && seen.insert(h.event_id.clone())).map(|h| h.number).collect()
    }

    /// Processed requests that repeated an event already processed.
    pub fn duplicates(&self) -> usize {
        let processed = self.hits().into_iter().filter(|h| h.processed).count();
        processed - self.deduplicated().len()
    }

    /// Waits until `n` distinct events were processed; false on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.deduplicated().len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.deduplicated().len() >= n
    }

    /// The first processed body of each event, in event order.
    pub fn bodies(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut v: Vec<Hit> =
            self.hits().into_iter().filter(|h| h.processed && seen.insert(h.event_id.clone())).collect();
        v.sort_by_key(|h| h.number);
        v.into_iter().map(|h| h.body).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// Runs a future to completion on a throwaway runtime (the server handle's stop is async).
fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A certificate authority and a server certificate for `127.0.0.1` it issued, made for a test.
pub struct TestPki {
    pub ca_pem: Vec<u8>,
    pub server_cert_pem: Vec<u8>,
    pub server_key_pem: Vec<u8>,
}

impl TestPki {
    pub fn new() -> Self {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
        use openssl::x509::{X509NameBuilder, X509};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = || PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let name = |cn: &str| {
            let mut n = X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            n.build()
        };
        let ca_key = key();
        let mut ca = X509::builder().unwrap();
        ca.set_version(2).unwrap();
        ca.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap()).unwrap();
        ca.set_subject_name(&name("vpr-broker test CA")).unwrap();
        ca.set_issuer_name(&name("vpr-broker test CA")).unwrap();
        ca.set_pubkey(&ca_key).unwrap();
        ca.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        ca.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let ca = ca.build();
        let server_key = key();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_serial_number(&BigNum::from_u32(2).unwrap().to_asn1_integer().unwrap()).unwrap();
        cert.set_subject_name(&name("127.0.0.1")).unwrap();
        cert.set_issuer_name(ca.subject_name()).unwrap();
        cert.set_pubkey(&server_key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        let san = SubjectAlternativeName::new().ip("127.0.0.1").build(&cert.x509v3_context(Some(&ca), None)).unwrap();
        cert.append_extension(san).unwrap();
        cert.sign(&ca_key, MessageDigest::sha256()).unwrap();
        Self {
            ca_pem: ca.to_pem().unwrap(),
            server_cert_pem: cert.build().to_pem().unwrap(),
            server_key_pem: server_key.private_key_to_pem_pkcs8().unwrap(),
        }
    }
}

/// An HTTPS webhook receiver (one request per connection), answering 200 to every push and
/// recording it.
pub struct TlsReceiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsReceiver {
    pub fn start(pki: &TestPki) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let identity =
            tokio_native_tls::native_tls::Identity::from_pkcs8(&pki.server_cert_pem, &pki.server_key_pem).unwrap();
        let acceptor =
            tokio_native_tls::TlsAcceptor::from(tokio_native_tls::native_tls::TlsAcceptor::new(identity).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let recorded = hits.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    };
                    let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 8192];
                        // Headers, then the body by Content-Length.
                        let (head, body_start) = loop {
                            let Ok(n) = tls.read(&mut chunk).await else { return };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                            }
                        };
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                                .map(|(_, v)| v.trim().to_owned())
                                .unwrap_or_default()
                        };
                        let length: usize = header("content-length").parse().unwrap_or(0);
                        while buf.len() < body_start + length {
                            let Ok(n) = tls.read(&mut chunk).await else { return };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        recorded.lock().unwrap().push(Hit {
                            event_id: header("vpr-event-id"),
                            number: header("vpr-event-number").parse().unwrap_or(-1),
                            subscription: header("vpr-subscription-id"),
                            attempt: header("vpr-delivery-attempt"),
                            content_type: header("content-type"),
                            body: String::from_utf8_lossy(&buf[body_start..body_start + length]).into_owned(),
                            processed: true,
                            signature: header("vpr-jws"),
                        });
                        let _ =
                            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
        });
        Self { url: format!("https://127.0.0.1:{port}/vpr/events"), hits, stop: Some(stop), thread: Some(thread) }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! A real SMTP server for tests: mailin's protocol state machine over TCP,
//! one thread per connection. It keeps every message it accepts, and refuses
//! recipients whose address starts with `bounce` with 550 (a hard bounce).

use mailin::{response, Action, AuthMechanism, Handler, Response, SessionBuilder};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message as transmitted (CRLF line ends, dots unstuffed).
    pub data: String,
}

impl Received {
    /// A header's value, unfolded (first occurrence, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut fields: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match fields.last_mut() {
                // Unfolding removes the line break and keeps the space.
                Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
                _ => fields.push(line.to_string()),
            }
        }
        fields.iter().find_map(|f| {
            let (n, v) = f.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone)]
struct Conn {
    received: Arc<Mutex<Vec<Received>>>,
    current: Option<Received>,
    /// `(user, password)` the server requires (AUTH PLAIN), if any.
    login: Option<(String, String)>,
    authenticated: bool,
}

impl Handler for Conn {
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        match &self.login {
            Some((u, p)) if u == user && p == password => {
                self.authenticated = true;
                response::AUTH_OK
            }
            _ => response::INVALID_CREDENTIALS,
        }
    }
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        if self.login.is_some() && !self.authenticated {
            response::AUTHENTICATION_REQUIRED
        } else {
            response::OK
        }
    }
    fn rcpt(&mut self, to: &str) -> Response {
        let to = to.trim_start_matches('<');
        if to.starts_with("bounce") {
            response::NO_MAILBOX
        } else if to.starts_with("full") {
            // 452: this message later, the server is up (a full mailbox).
            response::OUT_OF_SPACE
        } else {
            response::OK
        }
    }
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Received {
            from: from.to_string(),
            to: to.to_vec(),
            data: String::new(),
        });
        response::OK
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(m) = self.current.as_mut() {
            m.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }
    fn data_end(&mut self) -> Response {
        if let Some(m) = self.current.take() {
            self.received.lock().unwrap().push(m);
        }
        response::OK
    }
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        SmtpServer::on(TcpListener::bind("127.0.0.1:0").unwrap(), None)
    }

    /// On a given port (to bring a server "back up" where one was expected).
    pub fn start_on(port: u16) -> SmtpServer {
        SmtpServer::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), None)
    }

    /// One that takes mail only after AUTH PLAIN with these credentials
    /// (offered without TLS: this is a test server on loopback).
    pub fn start_with_login(user: &str, password: &str) -> SmtpServer {
        SmtpServer::on(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Some((user.to_string(), password.to_string())),
        )
    }

    fn on(listener: TcpListener, login: Option<(String, String)>) -> SmtpServer {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let conn = Conn {
                            received: r.clone(),
                            current: None,
                            login: login.clone(),
                            authenticated: false,
                        };
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(stream, peer.ip(), conn, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SmtpServer {
            addr,
            received,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, ip: IpAddr, conn: Conn, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    // Replies go out at once (a reply written in pieces would otherwise wait
    // for the client's delayed ACK, 40 ms a command).
    stream.set_nodelay(true)?;
    let mut builder = SessionBuilder::new("test-smtp");
    if conn.login.is_some() {
        builder
            .enable_auth(AuthMechanism::Plain)
            .insecure_enable_plaintext_auth();
    }
    let mut session = builder.build(ip, conn);
    let mut writer = std::io::BufWriter::new(stream.try_clone()?);
    let mut reader = BufReader::new(stream);
    session.greeting().write_to(&mut writer)?;
    writer.flush()?;
    let mut line = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // A stopped server drops its connections, as a dead one would.
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let res = session.process(&line);
        line.clear();
        match res.action {
            Action::Reply => {
                res.write_to(&mut writer)?;
                writer.flush()?;
            }
            Action::Close => {
                res.write_to(&mut writer)?;
                writer.flush()?;
                return Ok(());
            }
            Action::UpgradeTls => return Ok(()),
            Action::NoReply => {}
        }
    }
}

//! The `smtp` platform: a plain-text mail through an SMTP server, over implicit TLS
//! (`secure`, port 465) or STARTTLS when the server offers it, with `AUTH PLAIN` when a user is
//! set.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};

use super::{Notice, Platform};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufStream<Box<dyn Io>>;

fn tls() -> Result<tokio_rustls::TlsConnector> {
    let config = crate::crypto::tls_client_config(Vec::new())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn wrap_tls(io: Box<dyn Io>, host: &str) -> Result<Box<dyn Io>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a server name"))?;
    Ok(Box::new(tls()?.connect(name, io).await?))
}

/// One reply (all its lines); fails unless its code starts with `want`.
async fn reply(c: &mut Conn, want: char) -> Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if c.read_line(&mut line).await? == 0 {
            bail!("the SMTP server closed the connection");
        }
        all += &line;
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
    }
    if !all.starts_with(want) {
        bail!("SMTP: {}", all.trim());
    }
    Ok(all)
}

async fn command(c: &mut Conn, line: &str, want: char) -> Result<String> {
    c.write_all(line.as_bytes()).await?;
    c.write_all(b"\r\n").await?;
    c.flush().await?;
    reply(c, want).await
}

/// Lines of the body with CRLF endings and leading dots doubled.
fn body(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}\r\n")
            } else {
                format!("{l}\r\n")
            }
        })
        .collect()
}

/// A header value on one line (no CR or LF from a title).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

pub async fn send(p: &Platform, n: &Notice, text: &str, timeout: Duration) -> Result<()> {
    if p.host.is_empty() || p.from.is_empty() || p.to.is_empty() {
        bail!("smtp needs host, from and to");
    }
    tokio::time::timeout(timeout, send_inner(p, n, text))
        .await
        .context("the SMTP server did not answer in time")?
}

async fn send_inner(p: &Platform, n: &Notice, text: &str) -> Result<()> {
    let port = if p.port != 0 {
        p.port
    } else if p.secure {
        465
    } else {
        587
    };
    let tcp = tokio::net::TcpStream::connect((p.host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {}:{port}", p.host))?;
    let mut io: Box<dyn Io> = Box::new(tcp);
    if p.secure {
        io = wrap_tls(io, &p.host).await?;
    }
    let mut c: Conn = BufStream::new(io);
    reply(&mut c, '2').await?;
    let mut caps = command(&mut c, "EHLO crs", '2').await?;
    if !p.secure && caps.to_ascii_uppercase().contains("STARTTLS") {
        command(&mut c, "STARTTLS", '2').await?;
        let io = wrap_tls(c.into_inner(), &p.host).await?;
        c = BufStream::new(io);
        caps = command(&mut c, "EHLO crs", '2').await?;
    }
    let _ = caps;
    if !p.user.is_empty() {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", p.user, p.pass));
        command(&mut c, &format!("AUTH PLAIN {token}"), '2').await?;
    }
    command(&mut c, &format!("MAIL FROM:<{}>", one_line(&p.from)), '2').await?;
    let to: Vec<String> =
        p.to.split(',')
            .map(|t| one_line(t.trim()))
            .filter(|t| !t.is_empty())
            .collect();
    for t in &to {
        command(&mut c, &format!("RCPT TO:<{t}>"), '2').await?;
    }
    command(&mut c, "DATA", '3').await?;
    let mail = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nX-Crs-Type: {}\r\n\r\n{}.",
        one_line(&p.from),
        to.join(", "),
        one_line(&n.title),
        n.timestamp.to_rfc2822(),
        one_line(&n.kind),
        body(text)
    );
    command(&mut c, &mail, '2').await?;
    let _ = command(&mut c, "QUIT", '2').await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_use_crlf_and_double_leading_dots() {
        assert_eq!(body("a\n.b\nc"), "a\r\n..b\r\nc\r\n");
        assert_eq!(one_line("x\r\ny"), "x  y");
    }
}

//! A bare forwarding proxy: what one relay hop costs on this machine with no policy at all,
//! as a floor for crs's own numbers.
//!
//!     floor_proxy LISTEN UPSTREAM            # hyper's server and pooled client
//!     FLOOR_REQWEST=1 floor_proxy LISTEN UPSTREAM   # the upstream leg through reqwest
//!
//! `bench --soak SECS C 0 --via target/release/examples/floor_proxy` loads it in front of the
//! mock upstream in place of crs.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = Either<Incoming, Full<Bytes>>;

#[tokio::main]
async fn main() {
    crs::init_tls();
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: floor_proxy LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN: an address and port");
    let upstream = upstream.clone();
    let via_reqwest = std::env::var_os("FLOOR_REQWEST").is_some();
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let hyper_client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(conn);
    let reqwest_client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("reqwest client");
    let l = tokio::net::TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let (hyper_client, reqwest_client) = (hyper_client.clone(), reqwest_client.clone());
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let (hyper_client, reqwest_client) = (hyper_client.clone(), reqwest_client.clone());
                let url = format!("http://{upstream}{}", req.uri().path());
                async move {
                    let failed = || {
                        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
                        *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                        r
                    };
                    if !via_reqwest {
                        *req.uri_mut() = url.parse().expect("upstream URL");
                        req.headers_mut().remove("host");
                        let r = match hyper_client.request(req).await {
                            Ok(r) => r.map(Either::Left),
                            Err(_) => failed(),
                        };
                        return Ok::<Response<Body>, Infallible>(r);
                    }
                    let (parts, body) = req.into_parts();
                    let Ok(body) = body.collect().await else {
                        return Ok(failed());
                    };
                    let mut headers = parts.headers;
                    headers.remove("host");
                    let sent = reqwest_client
                        .post(url)
                        .headers(headers)
                        .body(body.to_bytes());
                    let Ok(r) = sent.send().await else {
                        return Ok(failed());
                    };
                    let status = r.status();
                    let Ok(b) = r.bytes().await else {
                        return Ok(failed());
                    };
                    let mut resp = Response::new(Either::Right(Full::new(b)));
                    *resp.status_mut() = status;
                    Ok(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

//! A TCP acceptor that turns Nagle's algorithm off on every accepted connection.
//!
//! salvo's own `TcpAcceptor` leaves it on, so a response written as headers plus small body
//! chunks (an SSE stream's first events) waits for the client's delayed ACK: about 40 ms of
//! time-to-first-byte added for nothing. A relay must forward bytes as they come.

use std::io::Result as IoResult;
use std::net::SocketAddr as StdSocketAddr;

use salvo::conn::tcp::TcpCoupler;
use salvo::conn::{Accepted, Acceptor, ConnCtrl, Holding, StraightStream};
use salvo::fuse::{ArcFusePolicy, FuseAction, FuseInfo, TransProto};
use salvo::http::Version;
use salvo::http::uri::Scheme;
use tokio::net::{TcpListener, TcpStream};

pub struct NoDelayAcceptor {
    inner: TcpListener,
    holdings: Vec<Holding>,
    /// A connection accepted by a call that was cancelled while its fuse was being decided.
    pending: Option<(TcpStream, StdSocketAddr)>,
}

impl NoDelayAcceptor {
    pub async fn bind(host: &str, port: u16) -> IoResult<Self> {
        let inner = TcpListener::bind((host, port)).await?;
        let local = inner.local_addr()?;
        Ok(NoDelayAcceptor {
            holdings: vec![Holding {
                local_addr: local.into(),
                http_versions: vec![Version::HTTP_11],
                http_scheme: Scheme::HTTP,
            }],
            inner,
            pending: None,
        })
    }

    pub fn local_addr(&self) -> IoResult<StdSocketAddr> {
        self.inner.local_addr()
    }
}

impl Acceptor for NoDelayAcceptor {
    type Coupler = TcpCoupler<Self::Stream>;
    type Stream = StraightStream<TcpStream>;

    fn holdings(&self) -> &[Holding] {
        &self.holdings
    }

    async fn accept(
        &mut self,
        fuse_policy: Option<ArcFusePolicy>,
    ) -> IoResult<Accepted<Self::Coupler, Self::Stream>> {
        loop {
            if self.pending.is_none() {
                let (conn, remote) = self.inner.accept().await?;
                // Best effort: a socket that refuses it still works, only slower.
                let _ = conn.set_nodelay(true);
                self.pending = Some((conn, remote));
            }
            let remote = self.pending.as_ref().expect("pending set above").1;
            let local_addr = self.holdings[0].local_addr.clone();
            let conn_ctrl = ConnCtrl::new();
            let (fuse_config, observer) = match &fuse_policy {
                Some(policy) => {
                    let info = FuseInfo {
                        trans_proto: TransProto::Tcp,
                        remote_addr: remote.into(),
                        local_addr: local_addr.clone(),
                    };
                    match policy.decide(&info).await {
                        FuseAction::Accept(config) => {
                            (Some(config), policy.observe(&info, &conn_ctrl))
                        }
                        FuseAction::Reject => {
                            self.pending = None;
                            continue;
                        }
                    }
                }
                None => (None, None),
            };
            let (conn, remote) = self.pending.take().expect("pending set above");
            return Ok(Accepted {
                coupler: TcpCoupler::new(),
                stream: StraightStream::new(conn, fuse_config, conn_ctrl.clone(), observer),
                fuse_config,
                conn_ctrl,
                remote_addr: remote.into(),
                local_addr,
                http_scheme: Scheme::HTTP,
            });
        }
    }
}

//! Traces of the Contact ID input and the Sur-Gard output (`fixtures/README.md`,
//! "Contact ID input and automation output"):
//!
//! - `@transport cid-tcp` / `@transport cid-udp`: `>` lines go to the Contact ID input
//!   (`[cid_input]`); `<` lines are its one-byte answers (`\x06`, `\x15`) or `(none)`.
//! - `@transport automation`: the runner is the automation software connected to the
//!   Sur-Gard output (server mode): `<` is the next line meldkamer sends (up to DC4),
//!   `>` is what the automation answers (`\x06`, `\x15`).
//!
//! In-process only: the runner enables those listeners on loopback when a trace uses them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::{AutomationMode, Config};
use crate::daemon::Running;
use crate::trace::{Step, Trace, TraceTransport};

/// True for the transports this module handles.
pub fn is_side(t: TraceTransport) -> bool {
    matches!(
        t,
        TraceTransport::CidTcp | TraceTransport::CidUdp | TraceTransport::Automation
    )
}

/// The trace's name for a transport (`@transport NAME`).
pub fn name(t: TraceTransport) -> &'static str {
    match t {
        TraceTransport::Tcp => "tcp",
        TraceTransport::Udp => "udp",
        TraceTransport::CidTcp => "cid-tcp",
        TraceTransport::CidUdp => "cid-udp",
        TraceTransport::Automation => "automation",
    }
}

/// Enable the listeners a trace needs (loopback, ephemeral ports).
pub fn configure(trace: &Trace, cfg: &mut Config) {
    let uses = |want: &[TraceTransport]| {
        trace
            .steps
            .iter()
            .any(|(_, s)| matches!(s, Step::Transport(t) if want.contains(t)))
    };
    if uses(&[TraceTransport::CidTcp, TraceTransport::CidUdp]) {
        cfg.cid_input.tcp_listen = "127.0.0.1:0".into();
        cfg.cid_input.udp_listen = "127.0.0.1:0".into();
    }
    if uses(&[TraceTransport::Automation]) {
        cfg.automation.mode = AutomationMode::Server;
        cfg.automation.listen = "127.0.0.1:0".into();
        // No heartbeat in the middle of a trace; a missing ACK is sent again after a second.
        cfg.automation.heartbeat_secs = 0;
        cfg.automation.ack_timeout_ms = 1000;
    }
}

/// The runner's connections for these transports.
#[derive(Default)]
pub struct Side {
    cid_tcp: Option<(TcpStream, BytesMut)>,
    automation: Option<(TcpStream, BytesMut)>,
    udp: Option<UdpSocket>,
}

impl Side {
    /// Close the connection of one transport (`@connect`).
    pub fn reset(&mut self, t: TraceTransport) {
        match t {
            TraceTransport::CidTcp => self.cid_tcp = None,
            TraceTransport::Automation => self.automation = None,
            _ => {}
        }
    }

    fn addr(t: TraceTransport, running: Option<&Running>) -> Option<SocketAddr> {
        let r = running?;
        match t {
            TraceTransport::CidTcp => r.cid_tcp_addr,
            TraceTransport::CidUdp => r.cid_udp_addr,
            TraceTransport::Automation => r.automation_addr,
            _ => None,
        }
    }

    async fn conn(
        &mut self,
        t: TraceTransport,
        running: Option<&Running>,
    ) -> Result<&mut (TcpStream, BytesMut), String> {
        let slot = match t {
            TraceTransport::CidTcp => &mut self.cid_tcp,
            _ => &mut self.automation,
        };
        if slot.is_none() {
            let addr = Self::addr(t, running).ok_or_else(|| format!("no {} listener", name(t)))?;
            let s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            let _ = s.set_nodelay(true);
            *slot = Some((s, BytesMut::new()));
        }
        slot.as_mut().ok_or_else(|| "no connection".to_string())
    }

    /// Send a `>` line.
    pub async fn send(&mut self, t: TraceTransport, running: Option<&Running>, bytes: &[u8]) -> Result<(), String> {
        if t == TraceTransport::CidUdp {
            if self.udp.is_none() {
                self.udp = Some(UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("bind: {e}"))?);
            }
            let addr = Self::addr(t, running).ok_or("no cid-udp listener")?;
            let s = self.udp.as_ref().ok_or("no socket")?;
            return s
                .send_to(bytes, addr)
                .await
                .map(|_| ())
                .map_err(|e| format!("send: {e}"));
        }
        let (s, _) = self.conn(t, running).await?;
        s.write_all(bytes).await.map_err(|e| format!("write: {e}"))
    }

    /// The next answer (`cid-*`: one byte or datagram) or line (`automation`: up to DC4).
    pub async fn receive(&mut self, t: TraceTransport, running: Option<&Running>, wait: Duration) -> Option<Vec<u8>> {
        if t == TraceTransport::CidUdp {
            let s = self.udp.as_ref()?;
            let mut b = vec![0u8; 4096];
            return match tokio::time::timeout(wait, s.recv_from(&mut b)).await {
                Ok(Ok((n, _))) => Some(b[..n].to_vec()),
                _ => None,
            };
        }
        let (s, buf) = self.conn(t, running).await.ok()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let end = match t {
                TraceTransport::Automation => buf.iter().position(|b| *b == 0x14).map(|i| i + 1),
                _ => (!buf.is_empty()).then_some(1),
            };
            if let Some(n) = end {
                return Some(buf.split_to(n).to_vec());
            }
            buf.reserve(512);
            match tokio::time::timeout_at(deadline, s.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
}

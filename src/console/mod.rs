//! `meldkamer console`: the operators' terminal. Keyboard only; the queue updates itself;
//! a lost connection is shown and retried, never a crash or a garbled screen.
//!
//! | module | what |
//! |---|---|
//! | [`app`] | state and key handling (pure) |
//! | [`dialog`] | the dialogs and their flows (pure) |
//! | [`keymap`] | the keys of each screen: footer and help (pure) |
//! | [`localtime`] | times in the console's time zone (pure) |
//! | [`ui`] | rendering (pure; tested with ratatui's TestBackend) |
//! | [`client`] | the API connection, reconnecting |
//!
//! Escape only goes back; quitting (`q` on the queue, Ctrl-C anywhere) asks first. A
//! life-safety alarm nobody has acknowledged shows a banner on every screen and rings the
//! terminal bell every two seconds until someone does.

pub mod app;
pub mod client;
pub mod dialog;
pub mod keymap;
pub mod localtime;
pub mod ui;

use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use app::{App, Key, Options};
use client::{Endpoint, NetEvent};

/// Why the console stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Terminal trouble.
    #[error("terminal")]
    Terminal(#[source] std::io::Error),
}

fn map_key(k: crossterm::event::KeyEvent) -> Option<Key> {
    if k.kind == KeyEventKind::Release {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        // Alt-combinations and other control keys mean nothing here: never type them.
        KeyCode::Char(_) if k.modifiers.intersects(KeyModifiers::ALT | KeyModifiers::CONTROL) => return None,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Tab => Key::Tab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}

/// Ring the terminal bell (BEL): it goes to the terminal, not into the screen buffer.
fn bell() -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(b"\x07")?;
    out.flush()
}

/// Run the console until the operator quits.
pub fn run(endpoint: Endpoint, options: Options) -> Result<(), ConsoleError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ConsoleError::Terminal)?;
    let mut terminal = ratatui::try_init().map_err(ConsoleError::Terminal)?;
    let result = rt.block_on(async move {
        let (out_tx, out_rx) = mpsc::channel(64);
        let (net_tx, mut net_rx) = mpsc::channel(256);
        tokio::spawn(client::run(endpoint, out_rx, net_tx));
        let (key_tx, mut key_rx) = mpsc::channel(64);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                if event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    match event::read() {
                        Ok(Event::Key(k)) => {
                            if let Some(key) = map_key(k)
                                && key_tx.blocking_send(key).is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        });
        let mut app = App::with_options(options);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let now = crate::clock::unix_ms(time::OffsetDateTime::now_utc());
            terminal
                .draw(|f| ui::draw(f, &app, now))
                .map_err(ConsoleError::Terminal)?;
            if app.bell_due(now) {
                bell().map_err(ConsoleError::Terminal)?;
            }
            let sends = tokio::select! {
                k = key_rx.recv() => match k { Some(k) => app.on_key(k), None => break },
                n = net_rx.recv() => match n {
                    Some(NetEvent::Connected) => app.on_connected(),
                    Some(NetEvent::Down(n, why)) => { app.on_disconnected(n, why); Vec::new() }
                    Some(NetEvent::Message(m)) => app.on_message(m),
                    None => break,
                },
                _ = tick.tick() => Vec::new(),
            };
            for s in sends {
                let _ = out_tx.send(s).await;
            }
            if app.quit {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    ratatui::restore();
    result
}

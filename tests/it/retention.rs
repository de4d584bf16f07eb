//! Retention over the wire: supervision polls (NULL, and Contact ID 602 periodic tests) are
//! ACKed once their trace is committed, without a frame row; the daemon keeps the first.

use meldkamer::protocol::frame::Token;

use crate::common::{TestDaemon, plain, tcp_exchange, token_of};

const SUPERVISED: &str = r#"
[[account]]
account = "1234"
supervision_secs = 90
"#;

/// Polls of account 1234 counted in committed rows (folded into `account_status`, or waiting
/// in `poll_log`).
fn counted(d: &TestDaemon) -> i64 {
    d.query_i64(
        "SELECT ifnull((SELECT s.polls FROM account_status s JOIN accounts a ON a.id = s.account_id
                        WHERE a.account = '1234'), 0) + (SELECT count(*) FROM poll_log)",
    )
}

/// Every ACK of a poll comes after its trace is committed: a NULL, its retransmission (same
/// bytes) and a periodic test (ADM-CID 602) store no frame or event row, and each new one is
/// counted once, in the database before its ACK is read; a poll after a silence longer than
/// the interval is stored. The count survives a restart.
#[tokio::test]
async fn polls_are_acked_after_their_commit_without_a_frame_row() {
    let mut d = TestDaemon::start_with(SUPERVISED, |_| {}).await;
    let ack = |r: Option<Vec<u8>>| token_of(&r.expect("answered"));
    let first = plain(Token::Null, 1, "1234", "", None);
    assert_eq!(ack(tcp_exchange(d.tcp(), &first).await), "ACK");
    assert_eq!(d.query_i64("SELECT count(*) FROM frames"), 0, "no row");
    assert_eq!(counted(&d), 1, "committed before the ACK");
    d.clock.advance(time::Duration::seconds(30));
    let second = plain(Token::Null, 2, "1234", "", None);
    assert_eq!(ack(tcp_exchange(d.tcp(), &second).await), "ACK");
    assert_eq!(counted(&d), 2, "committed before the ACK");
    assert_eq!(ack(tcp_exchange(d.tcp(), &second).await), "ACK", "a retransmission");
    assert_eq!(counted(&d), 2, "a retransmission is not counted again");
    d.clock.advance(time::Duration::seconds(30));
    let test = plain(Token::AdmCid, 3, "1234", "#1234|1602 00 000", None);
    assert_eq!(ack(tcp_exchange(d.tcp(), &test).await), "ACK");
    assert_eq!(counted(&d), 3, "a periodic test is a poll");
    assert_eq!(d.query_i64("SELECT count(*) FROM frames"), 0, "no row for any of them");
    assert_eq!(d.query_i64("SELECT count(*) FROM events"), 0);
    d.restart().await;
    assert_eq!(counted(&d), 3);
    d.clock.advance(time::Duration::seconds(200));
    let after_loss = plain(Token::Null, 4, "1234", "", None);
    assert_eq!(ack(tcp_exchange(d.tcp(), &after_loss).await), "ACK");
    assert_eq!(
        d.query_i64("SELECT count(*) FROM frames WHERE reason = 'poll_after_loss'"),
        1,
        "the first poll after a loss is stored"
    );
    d.stop().await;
    assert_eq!(
        d.query_i64("SELECT polls FROM account_status"),
        4,
        "a clean stop folds the log into the counter"
    );
}

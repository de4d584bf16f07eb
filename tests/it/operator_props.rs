//! Properties of the operator API's request parser and of the authorisation function, over
//! generated input: the parser never panics and refuses what is not exactly a request; the
//! authorisation never lets an operator reach a supervisor item, change a closed alarm, act on
//! an alarm another operator handles, or make a request above its role.

use meldkamer::correlate::service::Mode;
use meldkamer::operator::Role;
use meldkamer::operator::authz::{AlarmFacts, Caller, Denied, TargetFacts, authorize, authorize_target};
use meldkamer::operator::protocol::{Access, Envelope, Op, Request};
use proptest::prelude::*;
use serde_json::{Value, json};

fn op_name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(Op::ALL.iter().map(|o| o.as_str().to_string()).collect::<Vec<_>>()),
        "[a-z_]{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        "[0-9a-f]{32}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::hash_map("[a-z]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 14] = [
    "alarm",
    "text",
    "step",
    "done",
    "contact",
    "code",
    "outcome",
    "minutes",
    "disposition",
    "note",
    "reason",
    "query",
    "alarms",
    "name",
];

fn request_object() -> impl Strategy<Value = Value> {
    (
        op_name(),
        proptest::collection::vec((proptest::sample::select(FIELDS.to_vec()), json_value()), 0..6),
        proptest::option::of(any::<u64>()),
        proptest::option::of("[0-9a-f]{0,64}"),
    )
        .prop_map(|(op, fields, id, token)| {
            let mut m = serde_json::Map::new();
            m.insert("op".into(), json!(op));
            for (k, v) in fields {
                m.insert(k.into(), v);
            }
            if let Some(id) = id {
                m.insert("id".into(), json!(id));
            }
            if let Some(t) = token {
                m.insert("token".into(), json!(t));
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes: a request or an error, never a panic.
    #[test]
    fn the_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = serde_json::from_slice::<Envelope>(&bytes);
    }

    /// A parsed request serialises back to the fields it was given (nothing invented, nothing
    /// silently dropped but nulls) and names its op.
    #[test]
    fn a_parsed_request_is_exactly_what_was_sent(v in request_object()) {
        let text = v.to_string();
        if let Ok(env) = serde_json::from_str::<Envelope>(&text) {
            let back = serde_json::to_value(&env).expect("serialise");
            let (given, got) = (v.as_object().expect("object"), back.as_object().expect("object"));
            for (k, x) in given {
                if !x.is_null() {
                    prop_assert!(got.contains_key(k), "{k} dropped: {text} -> {back}");
                }
            }
            prop_assert_eq!(&got["op"], &given["op"]);
            prop_assert_eq!(env.request.op().as_str(), given["op"].as_str().unwrap_or_default());
        }
    }
}

fn caller(role: Role, name: &str) -> Caller {
    Caller {
        session_id: 7,
        operator_id: 7,
        name: name.into(),
        role,
        expires_ms: i64::MAX,
    }
}

fn facts() -> impl Strategy<Value = Option<AlarmFacts>> {
    proptest::option::of(
        (
            any::<bool>(),
            proptest::sample::select(vec!["new", "acknowledged", "in_progress", "closed"]),
            proptest::option::of(proptest::sample::select(vec!["olga", "otto", "sam"])),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(sup, state, owner, duress, life)| AlarmFacts {
                id: 1,
                supervisor_queue: sup,
                state: state.into(),
                owner: owner.map(str::to_string),
                duress,
                life_safety: life || duress,
            }),
    )
}

/// A request of each op with valid fields, naming alarm "a".
fn request_for(op: Op) -> Request {
    let v = match op {
        Op::Login => json!({"op": "login", "name": "olga", "password": "x"}),
        Op::Alarm | Op::Acknowledge | Op::Start | Op::Release => json!({"op": op.as_str(), "alarm": "a"}),
        Op::Takeover => json!({"op": "takeover", "alarm": "a", "reason": "r"}),
        Op::Note => json!({"op": "note", "alarm": "a", "text": "t"}),
        Op::Step => json!({"op": "step", "alarm": "a", "step": 1, "done": true}),
        Op::Call => json!({"op": "call", "alarm": "a", "contact": "c", "outcome": "busy"}),
        Op::Verify => json!({"op": "verify", "alarm": "a", "contact": "c", "code": "1"}),
        Op::Recall => json!({"op": "recall", "alarm": "a", "minutes": 5}),
        Op::Close => json!({"op": "close", "alarm": "a", "disposition": "dispatched"}),
        Op::BulkAcknowledge => json!({"op": "bulk_acknowledge", "alarms": ["a"], "reason": "r"}),
        Op::BulkClose => json!({"op": "bulk_close", "alarms": ["a"], "disposition": "test", "reason": "r"}),
        Op::Search => json!({"op": "search", "query": "q"}),
        Op::HandoverAdd => json!({"op": "handover_add", "text": "t"}),
        Op::ResetCode => json!({"op": "reset_code", "contact": "c"}),
        Op::Extend => json!({"op": "extend", "site": "S", "until_ms": 1, "reason": "r"}),
        Op::Service => json!({"op": "service", "site": "S", "mode": "test", "until_ms": 1, "reason": "r"}),
        Op::ServiceEnd => json!({"op": "service_end", "account": "1234"}),
        Op::Schedules => json!({"op": "schedules"}),
        Op::Logout | Op::Whoami | Op::Queue | Op::Supervision | Op::Subscribe | Op::Handovers | Op::Operators => {
            json!({"op": op.as_str()})
        }
    };
    serde_json::from_value::<Envelope>(v).expect("a valid request").request
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn authorisation_holds_its_rules(
        op in proptest::sample::select(Op::ALL.to_vec()),
        role in proptest::sample::select(vec![Role::Operator, Role::Supervisor, Role::Admin]),
        name in proptest::sample::select(vec!["olga", "otto", "sam"]),
        alarm in facts(),
    ) {
        let c = caller(role, name);
        let req = request_for(op);
        let r = authorize(&c, &req, alarm.as_ref());
        // Above its role: forbidden, whatever the object.
        if let Access::Role(least) = op.access() && role < least {
            prop_assert!(matches!(r, Err(Denied::Forbidden { .. })), "{op:?} by {role:?}: {r:?}");
            return Ok(());
        }
        let Some(a) = alarm.filter(|_| req.alarm().is_some()) else {
            if req.alarm().is_some() {
                prop_assert_eq!(r, Err(Denied::NotFound));
            }
            return Ok(());
        };
        if a.supervisor_queue && role < Role::Supervisor {
            prop_assert_eq!(r, Err(Denied::NotFound), "an operator never reaches a supervisor item");
            return Ok(());
        }
        if r.is_ok() && op != Op::Alarm {
            prop_assert!(a.state != "closed", "{op:?} changed a closed alarm");
            let other = a.owner.as_deref().is_some_and(|o| o != name);
            prop_assert!(!other || op == Op::Takeover || (op == Op::Release && role >= Role::Supervisor),
                "{op:?} by {name} on an alarm {:?} handles", a.owner);
            prop_assert!(!(op == Op::Close && a.duress && role < Role::Supervisor), "an operator closed a duress alarm");
            prop_assert!(!(op == Op::Recall && a.life_safety), "a life-safety alarm was put aside");
        }
    }
}

fn target_facts() -> impl Strategy<Value = Option<TargetFacts>> {
    proptest::option::of(
        (
            any::<bool>(),
            proptest::option::of(proptest::sample::select(vec![Mode::Test, Mode::OutOfService])),
        )
            .prop_map(|(has_schedule, period)| TargetFacts {
                site_id: Some(1),
                has_schedule,
                period,
            }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Requests that name a site or an account: the role first, then an unknown target is
    /// not found, then its state (an extension needs a schedule and a site in service; an end
    /// needs a period).
    #[test]
    fn target_authorisation_holds_its_rules(
        op in proptest::sample::select(vec![Op::Extend, Op::Service, Op::ServiceEnd]),
        role in proptest::sample::select(vec![Role::Operator, Role::Supervisor, Role::Admin]),
        t in target_facts(),
    ) {
        let c = caller(role, "olga");
        let req = request_for(op);
        prop_assert!(req.target().is_some());
        prop_assert!(req.alarm().is_none());
        let r = authorize_target(&c, &req, t.as_ref());
        if let Access::Role(least) = op.access() && role < least {
            prop_assert!(matches!(r, Err(Denied::Forbidden { .. })), "{op:?} by {role:?}: {r:?}");
            return Ok(());
        }
        let Some(t) = t else {
            prop_assert_eq!(r, Err(Denied::NoSuchTarget));
            return Ok(());
        };
        let allowed = match op {
            Op::Extend => t.has_schedule && t.period != Some(Mode::OutOfService),
            Op::ServiceEnd => t.period.is_some(),
            _ => true,
        };
        prop_assert_eq!(r.is_ok(), allowed, "{:?} on {:?}: {:?}", op, t, r);
    }
}

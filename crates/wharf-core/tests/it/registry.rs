//! The topic registry: validation, persistence, corrupt files.

use std::collections::BTreeMap;
use std::fs;

use wharf_core::registry::{TopicRegistry, REGISTRY_FILE};
use wharf_core::{ConfigOp, CoreError, NewTopic, TopicName, RETENTION_MS};

use crate::open;

#[test]
fn registry_survives_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    assert!(!reg.existed());
    let a = reg
        .create(&NewTopic::new("orders", 3).config("retention.ms", " 1000 "))
        .unwrap();
    let b = reg.create(&NewTopic::new("audit.log", 1)).unwrap();
    assert_ne!(a.id, b.id);
    reg.alter_config(
        "audit.log",
        &[ConfigOp::Set {
            key: "retention.bytes".into(),
            value: "4096".into(),
        }],
    )
    .unwrap();
    reg.set_partitions("orders", 5).unwrap();

    let again = TopicRegistry::load(dir.path()).unwrap();
    assert!(again.existed());
    let names: Vec<_> = again.topics().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["audit.log", "orders"]);
    let orders = again.get("orders").unwrap();
    assert_eq!(orders.id, a.id);
    assert_eq!(orders.partitions, 5);
    // Stored in canonical form.
    assert_eq!(orders.configs["retention.ms"], "1000");
    assert_eq!(
        again.get("audit.log").unwrap().configs["retention.bytes"],
        "4096"
    );
    // No temp file is left behind.
    let files: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, [REGISTRY_FILE]);
}

#[test]
fn a_stale_temp_file_from_a_crash_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    reg.create(&NewTopic::new("t", 1)).unwrap();
    // A crash mid-write leaves a torn temp file; the rename never happened.
    fs::write(dir.path().join("topics.json.tmp"), b"{\"format\":1,\"top").unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    assert!(reg.get("t").is_some());
    reg.create(&NewTopic::new("u", 1)).unwrap();
    assert_eq!(TopicRegistry::load(dir.path()).unwrap().len(), 2);
}

#[test]
fn invalid_topic_names_are_rejected_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    let long = "x".repeat(250);
    for (name, why) in [
        ("", "empty"),
        (".", "`.` and `..`"),
        ("..", "`.` and `..`"),
        ("a/b", "'/'"),
        ("with space", "' '"),
        ("ünï", "'ü'"),
        (long.as_str(), "250 characters"),
    ] {
        let err = reg.create(&NewTopic::new(name, 1)).unwrap_err();
        assert!(
            matches!(err, CoreError::InvalidTopicName { .. }),
            "{name:?}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(why), "{name:?}: {msg}");
    }
    assert!(reg.is_empty());
    assert!(TopicName::new("x".repeat(249)).is_ok());
    assert!("a.b-c_D9".parse::<TopicName>().is_ok());
}

#[test]
fn invalid_configs_name_the_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    for (key, value) in [
        ("retention.ms", "-2"),
        ("retention.ms", "soon"),
        ("retention.bytes", "-5"),
        ("segment.bytes", "13"),
        ("segment.bytes", "2147483648"),
        ("max.message.bytes", "-1"),
        ("cleanup.policy", "shred"),
    ] {
        let err = reg
            .create(&NewTopic::new("t", 1).config(key, value))
            .unwrap_err();
        assert!(
            matches!(err, CoreError::InvalidConfig { .. }),
            "{key}={value}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains(value), "{msg}");
    }
    let err = reg
        .create(&NewTopic::new("t", 1).config("retention.hours", "1"))
        .unwrap_err();
    assert!(matches!(err, CoreError::UnknownConfig { .. }));
    assert!(err.to_string().contains("retention.hours"), "{err}");

    let err = reg.create(&NewTopic::new("t", 0)).unwrap_err();
    assert!(
        matches!(err, CoreError::InvalidPartitions { count: 0, .. }),
        "{err}"
    );
    assert!(reg.is_empty(), "nothing invalid was registered");

    // Kafka's special values are accepted.
    reg.create(
        &NewTopic::new("t", 1)
            .config("retention.ms", "-1")
            .config("retention.bytes", "-1")
            .config("segment.bytes", "14")
            .config("cleanup.policy", "delete"),
    )
    .unwrap();
}

#[test]
fn compact_cleanup_policy_is_not_supported_yet() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    for value in ["compact", "compact,delete", "delete, compact"] {
        let err = reg
            .create(&NewTopic::new("t", 1).config("cleanup.policy", value))
            .unwrap_err();
        assert!(
            matches!(err, CoreError::UnsupportedConfig { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("not supported yet") && msg.contains("cleanup.policy"),
            "{msg}"
        );
    }
}

#[test]
fn partitions_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    reg.create(&NewTopic::new("t", 2)).unwrap();
    for n in [1, 2] {
        let err = reg.set_partitions("t", n).unwrap_err();
        assert!(matches!(err, CoreError::InvalidPartitions { .. }), "{err}");
    }
    assert!(matches!(
        reg.set_partitions("nope", 3),
        Err(CoreError::UnknownTopic { .. })
    ));
    assert_eq!(reg.set_partitions("t", 3).unwrap().partitions, 3);
}

#[test]
fn alter_config_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = TopicRegistry::load(dir.path()).unwrap();
    reg.create(&NewTopic::new("t", 1).config(RETENTION_MS, "5000"))
        .unwrap();
    let err = reg
        .alter_config(
            "t",
            &[
                ConfigOp::Delete {
                    key: RETENTION_MS.into(),
                },
                ConfigOp::Set {
                    key: "segment.bytes".into(),
                    value: "0".into(),
                },
            ],
        )
        .unwrap_err();
    assert!(err.to_string().contains("segment.bytes"), "{err}");
    let reloaded = TopicRegistry::load(dir.path()).unwrap();
    assert_eq!(
        reloaded.get("t").unwrap().configs,
        BTreeMap::from([(RETENTION_MS.to_string(), "5000".to_string())])
    );
}

#[test]
fn corrupt_registry_is_an_error_not_a_panic() {
    let cases: &[(&str, &[u8])] = &[
        ("garbage", b"\x00\xffnot json"),
        ("empty", b""),
        ("truncated", b"{\"format\":1,\"topics\":[{\"name\":\"a\""),
        ("wrong shape", b"[1,2,3]"),
        ("future format", b"{\"format\":99,\"topics\":[]}"),
        (
            "invalid name",
            b"{\"format\":1,\"topics\":[{\"name\":\"../etc\",\"id\":\"6f1c1c1c-1c1c-4c1c-9c1c-1c1c1c1c1c1c\",\"partitions\":1}]}",
        ),
        (
            "zero partitions",
            b"{\"format\":1,\"topics\":[{\"name\":\"a\",\"id\":\"6f1c1c1c-1c1c-4c1c-9c1c-1c1c1c1c1c1c\",\"partitions\":0}]}",
        ),
        (
            "bad id",
            b"{\"format\":1,\"topics\":[{\"name\":\"a\",\"id\":\"nope\",\"partitions\":1}]}",
        ),
        (
            "duplicate",
            b"{\"format\":1,\"topics\":[{\"name\":\"a\",\"id\":\"6f1c1c1c-1c1c-4c1c-9c1c-1c1c1c1c1c1c\",\"partitions\":1},{\"name\":\"a\",\"id\":\"7f1c1c1c-1c1c-4c1c-9c1c-1c1c1c1c1c1c\",\"partitions\":1}]}",
        ),
        (
            "bad config",
            b"{\"format\":1,\"topics\":[{\"name\":\"a\",\"id\":\"6f1c1c1c-1c1c-4c1c-9c1c-1c1c1c1c1c1c\",\"partitions\":1,\"configs\":{\"retention.ms\":\"x\"}}]}",
        ),
    ];
    for (what, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), bytes).unwrap();
        match TopicRegistry::load(dir.path()) {
            Err(CoreError::CorruptRegistry { path, reason }) => {
                assert!(path.ends_with(REGISTRY_FILE), "{what}");
                assert!(!reason.is_empty(), "{what}");
            }
            other => panic!("{what}: expected CorruptRegistry, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn topics_survive_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (id, overrides) = {
        let broker = open(dir.path()).await;
        let d = broker
            .create_topic(NewTopic::new("orders", 2).config(RETENTION_MS, "60000"))
            .await
            .unwrap();
        broker
            .create_topic(NewTopic::new("events", 1))
            .await
            .unwrap();
        broker
            .alter_topic_config(
                "events",
                vec![ConfigOp::Set {
                    key: "cleanup.policy".into(),
                    value: "delete".into(),
                }],
            )
            .await
            .unwrap();
        broker.create_partitions("events", 4).await.unwrap();
        broker.shutdown().await.unwrap();
        (d.id, d.overrides)
    };
    let broker = open(dir.path()).await;
    let topics = broker.list_topics();
    let names: Vec<_> = topics.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["events", "orders"]);
    let orders = broker.describe_topic("orders").unwrap();
    assert_eq!(orders.id, id);
    assert_eq!(orders.partitions, 2);
    assert_eq!(orders.overrides, overrides);
    assert_eq!(orders.config.retention_ms(), Some(60000));
    let events = broker.describe_topic("events").unwrap();
    assert_eq!(events.partitions, 4);
    assert_eq!(events.overrides["cleanup.policy"], "delete");
    for p in 0..4 {
        assert!(dir
            .path()
            .join("topics/events")
            .join(p.to_string())
            .is_dir());
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn broker_rejects_bad_topics_without_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let err = broker
        .create_topic(NewTopic::new("..", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InvalidTopicName { .. }), "{err}");
    let err = broker
        .create_topic(NewTopic::new("t", 1).config("cleanup.policy", "compact"))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::UnsupportedConfig { .. }), "{err}");
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let err = broker
        .create_topic(NewTopic::new("t", 3))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::TopicExists { .. }), "{err}");
    assert!(matches!(
        broker.delete_topic("nope").await,
        Err(CoreError::UnknownTopic { .. })
    ));
    assert_eq!(broker.list_topics().len(), 1);
    let topic_dirs = fs::read_dir(dir.path().join("topics")).unwrap().count();
    assert_eq!(topic_dirs, 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn broker_refuses_a_corrupt_registry() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(REGISTRY_FILE), b"{oops").unwrap();
    match wharf_core::Broker::open(wharf_core::BrokerConfig::new(dir.path())).await {
        Err(e @ CoreError::CorruptRegistry { .. }) => {
            assert!(e.to_string().contains("topics.json"), "{e}")
        }
        Err(e) => panic!("expected CorruptRegistry, got {e}"),
        Ok(_) => panic!("a corrupt registry must not open"),
    }
}

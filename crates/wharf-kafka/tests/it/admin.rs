//! Topic administration: create, delete, partitions, configs, records, cluster.

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncResource, AlterableConfig as IncConfig,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;
use wharf_core::NewTopic;

use crate::{batch, topic, TestBroker};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn creatable(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic(name))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        )
}

#[tokio::test]
async fn create_topics_validates_creates_and_reports_per_topic() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let req = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![creatable("v", 3, &[("retention.ms", "1000")])]);
    let resp = c.call(&req, 7).await;
    assert_eq!(resp.topics[0].error_code, 0);
    assert!(
        b.broker.describe_topic("v").is_err(),
        "validate_only created it"
    );

    let req = CreateTopicsRequest::default().with_topics(vec![
        creatable("a", 3, &[("retention.ms", "1000")]),
        creatable("dflt", -1, &[]),
        creatable("bad name!", 1, &[]),
        creatable("badcfg", 1, &[("retention.ms", "soon")]),
        creatable("a", 1, &[]),
        creatable("rf", 1, &[]).with_replication_factor(3),
    ]);
    let resp = c.call(&req, 7).await;
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [0, 0, 17, 40, 36, 38]);
    assert_eq!(resp.topics[0].num_partitions, 3);
    assert_eq!(
        resp.topics[0].topic_id,
        b.broker.describe_topic("a").unwrap().id
    );
    assert_eq!(b.broker.describe_topic("dflt").unwrap().partitions, 1);
    assert_eq!(
        b.broker.describe_topic("a").unwrap().config.retention_ms(),
        Some(1000)
    );
    for version in 2..=6 {
        let req = CreateTopicsRequest::default().with_topics(vec![creatable(
            &format!("t{version}"),
            2,
            &[],
        )]);
        assert_eq!(
            c.call(&req, version).await.topics[0].error_code,
            0,
            "v{version}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn delete_topics_by_name_and_by_id() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("a", 1)).await.unwrap();
    let d = b.broker.create_topic(NewTopic::new("b", 1)).await.unwrap();
    let mut c = b.connect().await;
    let resp = c
        .call(
            &DeleteTopicsRequest::default().with_topic_names(vec![topic("a"), topic("zz")]),
            5,
        )
        .await;
    let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [0, 3]);
    let resp = c
        .call(
            &DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_topic_id(d.id)]),
            6,
        )
        .await;
    assert_eq!(resp.responses[0].error_code, 0);
    assert!(b.broker.list_topics().is_empty());
    b.stop().await;
}

#[tokio::test]
async fn create_partitions_raises_the_count_and_refuses_to_shrink() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    let req = |count, validate_only| {
        CreatePartitionsRequest::default()
            .with_validate_only(validate_only)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic("t"))
                .with_count(count)])
    };
    assert_eq!(c.call(&req(4, true), 3).await.results[0].error_code, 0);
    assert_eq!(b.broker.describe_topic("t").unwrap().partitions, 1);
    assert_eq!(c.call(&req(4, false), 3).await.results[0].error_code, 0);
    assert_eq!(b.broker.describe_topic("t").unwrap().partitions, 4);
    assert_eq!(
        c.call(&req(2, false), 0).await.results[0].error_code,
        37,
        "INVALID_PARTITIONS"
    );
    b.stop().await;
}

#[tokio::test]
async fn configs_are_described_altered_and_incrementally_altered() {
    let b = TestBroker::start().await;
    b.broker
        .create_topic(NewTopic::new("t", 1).config("retention.ms", "5000"))
        .await
        .unwrap();
    let mut c = b.connect().await;
    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))]);
    let resp = c.call(&describe, 4).await;
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0);
    let get = |configs: &[kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult], key: &str| {
        configs
            .iter()
            .find(|e| e.name.as_str() == key)
            .map(|e| (e.value.as_ref().map(|v| v.to_string()), e.config_source))
    };
    assert_eq!(
        get(&r.configs, "retention.ms"),
        Some((Some("5000".into()), 1))
    );
    assert_eq!(
        get(&r.configs, "cleanup.policy"),
        Some((Some("delete".into()), 5))
    );
    assert_eq!(
        get(&r.configs, "dedup.window.ms"),
        Some((Some("300000".into()), 5))
    );
    assert_eq!(
        get(&r.configs, "message.ttl.ms"),
        Some((Some("-1".into()), 5))
    );

    // Incremental: set one, delete the other.
    let inc =
        IncrementalAlterConfigsRequest::default().with_resources(vec![IncResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![
                IncConfig::default()
                    .with_name(s("segment.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(s("1048576"))),
                IncConfig::default()
                    .with_name(s("retention.ms"))
                    .with_config_operation(1),
            ])]);
    assert_eq!(c.call(&inc, 1).await.responses[0].error_code, 0);
    let d = b.broker.describe_topic("t").unwrap();
    assert_eq!(d.config.segment_bytes(), 1048576);
    assert!(!d.overrides.contains_key("retention.ms"));

    // A bad value changes nothing.
    let bad =
        IncrementalAlterConfigsRequest::default().with_resources(vec![IncResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![IncConfig::default()
                .with_name(s("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(s("x")))])]);
    assert_eq!(c.call(&bad, 0).await.responses[0].error_code, 40);

    // AlterConfigs replaces the whole set of overrides.
    let alter =
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("t"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(s("retention.bytes"))
                .with_value(Some(s("999")))])]);
    assert_eq!(c.call(&alter, 2).await.responses[0].error_code, 0);
    let d = b.broker.describe_topic("t").unwrap();
    assert_eq!(d.overrides.keys().collect::<Vec<_>>(), ["retention.bytes"]);

    // Unknown topic.
    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("nope"))]);
    assert_eq!(c.call(&describe, 1).await.results[0].error_code, 3);
    b.stop().await;
}

#[tokio::test]
async fn delete_records_moves_the_log_start_offset() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    for _ in 0..3 {
        b.broker
            .append("t", 0, batch(&[(None, Some(b"a")), (None, Some(b"b"))]))
            .await
            .unwrap();
    }
    let mut c = b.connect().await;
    let req = |offset| {
        DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic("t"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])])
    };
    let resp = c.call(&req(2), 2).await;
    let p = &resp.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 2));
    assert_eq!(b.broker.offsets("t", 0).unwrap().log_start_offset, 2);
    let resp = c.call(&req(100), 1).await;
    assert_eq!(
        resp.topics[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let resp = c.call(&req(-1), 0).await;
    assert_eq!(resp.topics[0].partitions[0].low_watermark, 6);
    b.stop().await;
}

#[tokio::test]
async fn describe_cluster_names_the_one_broker_as_controller() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for version in 0..=1 {
        let resp = c.call(&DescribeClusterRequest::default(), version).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.controller_id.0, 0);
        assert_eq!(resp.brokers.len(), 1);
        assert_eq!(resp.brokers[0].port, i32::from(b.addr.port()));
    }
    b.stop().await;
}

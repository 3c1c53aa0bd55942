//! InitProducerId and idempotent Produce over the wire.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, ProduceRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use wharf_core::NewTopic;
use wharf_log::batch::{Record, RecordBatchBuilder};

use crate::{topic, Client, TestBroker};

fn pbatch(producer_id: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new().producer(producer_id, epoch, seq);
    for i in 0..records {
        let v = format!("p{producer_id}-e{epoch}-s{}", seq as usize + i);
        b.push(&Record {
            key: None,
            value: Some(v.as_bytes()),
            headers: vec![],
            timestamp: 1_700_000_000_000,
        });
    }
    b.build()
}

/// (error code, base offset) of a one-partition produce.
async fn produce(c: &mut Client, name: &str, records: Vec<u8>) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(records)))])]);
    let resp = c.call(&req, 9).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn init_producer_id_hands_out_ids_and_bumps_the_epoch_on_request() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for version in [0i16, 2, 4, 5] {
        let fresh = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let a = c.call(&fresh, version).await;
        let again = c.call(&fresh, version).await;
        assert_eq!((a.error_code, again.error_code), (0, 0), "v{version}");
        assert!(
            a.producer_id.0 >= 0 && a.producer_epoch == 0,
            "v{version}: {a:?}"
        );
        assert_ne!(
            a.producer_id, again.producer_id,
            "v{version}: ids are never reused"
        );
        if version >= 3 {
            // KIP-360: the same producer asking again gets its epoch bumped.
            let bump = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(a.producer_id)
                .with_producer_epoch(a.producer_epoch);
            let bumped = c.call(&bump, version).await;
            assert_eq!(bumped.error_code, 0);
            assert_eq!(
                (bumped.producer_id, bumped.producer_epoch),
                (a.producer_id, 1)
            );
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn a_transactional_id_is_refused_with_a_fatal_error() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx-1"))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp = c.call(&req, 4).await;
    assert_eq!(
        resp.error_code,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    assert_eq!(resp.producer_id.0, -1);
    b.stop().await;
}

#[tokio::test]
async fn a_retried_batch_is_answered_with_its_first_offset_and_stored_once() {
    let b = TestBroker::start().await;
    b.broker
        .create_topic(NewTopic::new("idem", 1))
        .await
        .unwrap();
    let mut c = b.connect().await;
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let p = c.call(&init, 4).await;
    let (id, epoch) = (p.producer_id.0, p.producer_epoch);

    assert_eq!(
        produce(&mut c, "idem", pbatch(id, epoch, 0, 3)).await,
        (0, 0)
    );
    assert_eq!(
        produce(&mut c, "idem", pbatch(id, epoch, 3, 2)).await,
        (0, 3)
    );
    // The retry of the first batch: success, same offset, nothing stored again.
    assert_eq!(
        produce(&mut c, "idem", pbatch(id, epoch, 0, 3)).await,
        (0, 0)
    );
    assert_eq!(b.broker.offsets("idem", 0).unwrap().log_end_offset, 5);
    // A gap in the sequence.
    let (code, _) = produce(&mut c, "idem", pbatch(id, epoch, 9, 1)).await;
    assert_eq!(code, ResponseError::OutOfOrderSequenceNumber.code());
    // An older epoch, once a newer one has written.
    assert_eq!(
        produce(&mut c, "idem", pbatch(id, epoch + 1, 0, 1)).await,
        (0, 5)
    );
    let (code, _) = produce(&mut c, "idem", pbatch(id, epoch, 5, 1)).await;
    assert_eq!(code, ResponseError::InvalidProducerEpoch.code());
    assert_eq!(b.broker.offsets("idem", 0).unwrap().log_end_offset, 6);
    b.stop().await;
}

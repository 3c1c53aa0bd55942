//! DescribeCluster: one broker, which is also the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::conn::Ctx;
use crate::{CLUSTER_ID, NODE_ID};

pub async fn handle(
    ctx: &Ctx,
    _req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let (host, port) = &ctx.advertised;
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(CLUSTER_ID))
        .with_controller_id(BrokerId(NODE_ID))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(str_bytes(host.clone()))
            .with_port(*port)])
}

//! InitProducerId: producer ids for idempotent producers (KIP-98), and epoch bumps for a
//! producer that asks again with its current id and epoch (KIP-360). Transactional ids
//! are refused: transactions are not implemented, and a fatal error makes a
//! transactional producer fail at once with a readable message.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::debug;

use crate::conn::Ctx;
use crate::errors;

pub async fn handle(
    ctx: &Ctx,
    req: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let transactional_id = req.transactional_id.as_ref().map(|t| t.0.as_str());
    match ctx
        .broker
        .init_producer_id(transactional_id, req.producer_id.0, req.producer_epoch)
        .await
    {
        Ok(p) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(p.producer_id))
            .with_producer_epoch(p.producer_epoch),
        Err(e) => {
            debug!(error = %e, ?transactional_id, "InitProducerId refused");
            InitProducerIdResponse::default()
                .with_error_code(errors::code(&e))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}

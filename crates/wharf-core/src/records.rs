//! Records out of stored batches, for front-ends that hand messages out one by one
//! (HTTP queue pulls, dead letters) rather than as the batches Kafka fetches serve.
//!
//! Stored batches are Kafka RecordBatch v2, possibly compressed by the producer
//! (gzip, snappy, lz4, zstd). kafka-protocol parses them; the inflating is done here
//! ([`inflate`]), bounded by [`MAX_INFLATED_BYTES`], so a small batch that inflates to
//! gigabytes (a decompression bomb a producer could store within `max.message.bytes`)
//! is refused instead of exhausting memory. Batches were checked (length, magic,
//! CRC-32C) when appended and again when recovered, so a batch that fails to decode
//! here is reported, not trusted.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use wharf_log::batch::BatchHeader;

/// Most bytes one batch's records may inflate to: 64 MiB, 64 times Kafka's default
/// `max.message.bytes`.
pub const MAX_INFLATED_BYTES: usize = 64 << 20;

/// Kafka's snappy framing (xerial's `SnappyOutputStream`): this magic, a version and a
/// compatible version (4 bytes each), then chunks of a 4-byte big-endian length and raw
/// snappy data.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";

/// Inflates a batch's records section, refusing to produce more than
/// [`MAX_INFLATED_BYTES`].
fn inflate(input: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    let data = std::mem::take(input);
    let limit = MAX_INFLATED_BYTES as u64 + 1;
    let mut out = Vec::new();
    match codec {
        Compression::None => return Ok(data),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(&data[..])
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(&data[..])?
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Lz4 => {
            lz4::Decoder::new(&data[..])?
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Snappy => snappy(&data, &mut out)?,
    }
    if out.len() > MAX_INFLATED_BYTES {
        anyhow::bail!(
            "its records inflate to more than {MAX_INFLATED_BYTES} bytes; refused as a likely decompression bomb"
        );
    }
    Ok(Bytes::from(out))
}

/// Snappy, xerial-framed as Kafka's Java client writes it, or raw as some clients do;
/// each block's declared length is checked against the bound before it is inflated.
fn snappy(data: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    let block = |raw: &[u8], out: &mut Vec<u8>| -> anyhow::Result<()> {
        let len = snap::raw::decompress_len(raw)?;
        if out.len() + len > MAX_INFLATED_BYTES {
            anyhow::bail!(
                "its records inflate to more than {MAX_INFLATED_BYTES} bytes; refused as a likely decompression bomb"
            );
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new().decompress(raw, &mut out[start..])?;
        Ok(())
    };
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC) else {
        return block(data, out);
    };
    rest = rest
        .get(8..)
        .ok_or_else(|| anyhow::anyhow!("snappy framing cut short"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| anyhow::anyhow!("snappy chunk length cut short"))?;
        let len = usize::try_from(u32::from_be_bytes(*len))?;
        let chunk = tail
            .get(..len)
            .ok_or_else(|| anyhow::anyhow!("snappy chunk cut short"))?;
        block(chunk, out)?;
        rest = &tail[len..];
    }
    Ok(())
}

/// One record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub offset: u64,
    /// Milliseconds since the epoch: the producer's create time, or the broker's log
    /// append time when the batch says so.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// In the order the producer sent them; a name may repeat.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Message {
    /// The first header named `name`, if it is there and has a value.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The first header named `name` read as a decimal integer.
    pub fn header_i64(&self, name: &str) -> Option<i64> {
        std::str::from_utf8(self.header(name)?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// What [`decode`] found in a run of whole batches.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Data records at or after the requested offset, in offset order. Control records
    /// (transaction markers) are left out.
    pub messages: Vec<Message>,
    /// One past the last offset of the last batch decoded: every offset from the
    /// requested one up to this that is not in `messages` holds no data record.
    pub end_offset: u64,
}

/// A batch that would not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable record batch at offsets {offset}..{end}: {reason}")]
pub struct DecodeError {
    /// The batch's base offset.
    pub offset: u64,
    /// One past its last offset.
    pub end: u64,
    pub reason: String,
}

/// Decodes the whole batches in `bytes` (as [`crate::Broker::read`] returns them),
/// keeping the records at or after `from`. A trailing partial batch is ignored. Keys
/// and values of uncompressed batches share `bytes` rather than being copied.
///
/// A batch that does not decode ends the run: what came before it is returned, and
/// only when it is the first batch is it an error (so a caller can skip exactly it).
pub fn decode(bytes: Bytes, from: u64) -> Result<Decoded, DecodeError> {
    let mut out = Decoded {
        messages: Vec::new(),
        end_offset: from,
    };
    let mut pos = 0;
    while let Some(header) = BatchHeader::parse(&bytes[pos..]) {
        let Some(len) = header.total_len() else { break };
        if pos + len > bytes.len() {
            break;
        }
        let batch = bytes.slice(pos..pos + len);
        pos += len;
        let base = u64::try_from(header.base_offset).unwrap_or(0);
        let end = u64::try_from(header.last_offset()).unwrap_or(0) + 1;
        if end <= from {
            continue;
        }
        let earlier = out.end_offset > from;
        out.end_offset = out.end_offset.max(end);
        if header.is_control() {
            continue;
        }
        let mut buf = batch;
        let set = match RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(inflate))
        {
            Ok(set) => set,
            Err(_) if earlier => {
                // Leave it to the next read, which starts at it and reports it.
                out.end_offset = base.max(from);
                return Ok(out);
            }
            Err(e) => {
                return Err(DecodeError {
                    offset: base,
                    end,
                    reason: e.to_string(),
                })
            }
        };
        for r in set.records {
            let Ok(offset) = u64::try_from(r.offset) else {
                continue;
            };
            if offset < from || r.control {
                continue;
            }
            out.messages.push(Message {
                offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_log::batch::{set_base_offset, Record, RecordBatchBuilder};

    fn batch(base: i64, values: &[&str]) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new();
        for (i, v) in values.iter().enumerate() {
            b.push(&Record {
                key: Some(b"k"),
                value: Some(v.as_bytes()),
                headers: vec![("h", Some(b"7")), ("n", None)],
                timestamp: 1000 + i as i64,
            });
        }
        let mut bytes = b.build();
        set_base_offset(&mut bytes, base);
        bytes
    }

    #[test]
    fn decodes_records_from_the_requested_offset_across_batches() {
        let mut bytes = batch(10, &["a", "b", "c"]);
        bytes.extend(batch(13, &["d"]));
        let d = decode(bytes.into(), 11).unwrap();
        let got: Vec<_> = d
            .messages
            .iter()
            .map(|m| (m.offset, m.value.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (11, Some(Bytes::from("b"))),
                (12, Some(Bytes::from("c"))),
                (13, Some(Bytes::from("d")))
            ]
        );
        assert_eq!(d.end_offset, 14);
        assert_eq!(d.messages[0].timestamp_ms, 1001);
        assert_eq!(d.messages[0].header_i64("h"), Some(7));
        assert_eq!(d.messages[0].header("n"), None);
        assert_eq!(d.messages[0].key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn a_partial_trailing_batch_is_left_for_the_next_read() {
        let mut bytes = batch(0, &["a"]);
        let second = batch(1, &["b"]);
        bytes.extend(&second[..second.len() - 3]);
        let d = decode(bytes.into(), 0).unwrap();
        assert_eq!(d.messages.len(), 1);
        assert_eq!(d.end_offset, 1);
    }

    #[test]
    fn a_batch_that_does_not_decode_is_an_error_naming_its_offset() {
        let mut bytes = batch(5, &["a", "b"]);
        // Claim a third record that is not there.
        let count_at = 57;
        bytes[count_at..count_at + 4].copy_from_slice(&3i32.to_be_bytes());
        let e = decode(bytes.clone().into(), 0).unwrap_err();
        assert_eq!((e.offset, e.end), (5, 7));
        // After a good batch, the bad one ends the run without losing the good one.
        let mut two = batch(0, &["ok"]);
        two.extend(&bytes);
        let d = decode(two.into(), 0).unwrap();
        assert_eq!((d.messages.len(), d.end_offset), (1, 5));
    }

    /// `batch(base, values)` with its records section compressed by `codec` (Kafka's
    /// attribute bits 0-2: 1 gzip, 2 snappy, 3 lz4, 4 zstd) or replaced by `records`.
    fn compressed(base: i64, values: &[&str], codec: u8, records: Option<Vec<u8>>) -> Vec<u8> {
        use std::io::Write;
        let plain = batch(base, values);
        let (head, body) = plain.split_at(wharf_log::batch::HEADER_LEN);
        let body = records.unwrap_or_else(|| match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(body).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(body).unwrap(),
            3 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                e.write_all(body).unwrap();
                let (out, r) = e.finish();
                r.unwrap();
                out
            }
            _ => zstd::encode_all(body, 1).unwrap(),
        });
        let mut out = head.to_vec();
        out.extend(body);
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out[22] = (out[22] & !0x07) | codec;
        let crc = wharf_log::batch::compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn every_codec_inflates_within_the_bound() {
        for codec in 1..=4u8 {
            let d = decode(compressed(3, &["a", "b"], codec, None).into(), 0).unwrap();
            let got: Vec<_> = d
                .messages
                .iter()
                .map(|m| (m.offset, m.value.clone()))
                .collect();
            assert_eq!(
                got,
                vec![(3, Some(Bytes::from("a"))), (4, Some(Bytes::from("b")))],
                "codec {codec}"
            );
        }
        // Kafka's Java client frames snappy the xerial way.
        let plain = batch(0, &["x"]);
        let body = &plain[wharf_log::batch::HEADER_LEN..];
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend(1u32.to_be_bytes());
        framed.extend(1u32.to_be_bytes());
        let chunk = snap::raw::Encoder::new().compress_vec(body).unwrap();
        framed.extend((chunk.len() as u32).to_be_bytes());
        framed.extend(chunk);
        let d = decode(compressed(0, &["x"], 2, Some(framed)).into(), 0).unwrap();
        assert_eq!(d.messages[0].value.as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn a_decompression_bomb_is_refused_not_inflated() {
        // 256 MiB of zeros compresses to a few KiB with zstd, gzip and snappy alike.
        let zeros = vec![0u8; 256 << 20];
        let bombs = [
            (4u8, zstd::encode_all(&zeros[..], 1).unwrap()),
            (1, {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&zeros).unwrap();
                e.finish().unwrap()
            }),
            (2, snap::raw::Encoder::new().compress_vec(&zeros).unwrap()),
        ];
        drop(zeros);
        for (codec, bomb) in bombs {
            assert!(bomb.len() < 16 << 20, "codec {codec}: {} bytes", bomb.len());
            let e = decode(compressed(7, &["a"], codec, Some(bomb)).into(), 0).unwrap_err();
            assert_eq!((e.offset, e.end), (7, 8), "codec {codec}");
            assert!(
                e.reason.contains("decompression bomb"),
                "codec {codec}: {e}"
            );
        }
    }
}

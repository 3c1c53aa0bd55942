//! Size-prefixed framing, with the size bounded before any allocation.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The smallest request: api key, api version, correlation id.
pub const MIN_REQUEST_BYTES: u32 = 8;

/// Why a connection is dropped while reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request size {size} is outside the accepted range {MIN_REQUEST_BYTES}..={max} bytes")]
    BadSize { size: i32, max: u32 },
    #[error("connection closed in the middle of a {expected}-byte request after {got} bytes")]
    Truncated { expected: u32, got: usize },
    #[error("reading from the socket: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame. `Ok(None)` is a clean close between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Bytes>, FrameError> {
    let mut size_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut size_buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated { expected: 4, got });
        }
        got += n;
    }
    let size = i32::from_be_bytes(size_buf);
    let len = match u32::try_from(size) {
        Ok(n) if (MIN_REQUEST_BYTES..=max).contains(&n) => n,
        _ => return Err(FrameError::BadSize { size, max }),
    };
    // Bounded by `max` above.
    let mut buf = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: len,
                got: filled,
            });
        }
        filled += n;
    }
    Ok(Some(Bytes::from(buf)))
}

//! `wharf-bench loopback`: the machine's own trip, with no broker and no disk.
//!
//! One thread sends `size`-byte messages over a loopback TCP connection, `rate` times a
//! second, each stamped with when it was due; another reads them and times each from its
//! due time, exactly as the `latency` workload times messages. This is the least any
//! trip costs on the machine: two threads woken for every message (the sender by its
//! timer, the reader by the socket). Its tail is the machine's: a CPU taken away from a
//! thread that is about to run delays every message behind it, whatever broker is
//! measured, so this measures in the same sitting how much of a percentile the machine
//! itself takes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::report::Latency;
use crate::workload::due;

#[derive(Debug, Serialize)]
pub struct LoopbackReport {
    pub workload: &'static str,
    pub rate: u64,
    pub size: usize,
    pub messages: u64,
    /// From when each message was due to when the reader had all of it.
    pub latency: Latency,
    /// Messages that took over 1 ms, and over 5 ms.
    pub over_1ms: u64,
    pub over_5ms: u64,
}

pub fn run(rate: u64, size: usize, duration: Duration) -> Result<LoopbackReport> {
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    if size < 8 {
        bail!("--size must be at least 8 (the due time)");
    }
    let messages = (duration.as_secs_f64() * rate as f64).ceil() as u64;
    if messages == 0 {
        bail!("--duration is too short for one message at --rate {rate}");
    }
    let every = Duration::from_nanos(1_000_000_000 / rate);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("listening on loopback")?;
    let addr = listener.local_addr()?;
    let mut tx = TcpStream::connect(addr).context("connecting on loopback")?;
    let (mut rx, _) = listener.accept().context("accepting on loopback")?;
    // As a broker's clients do: no Nagle delay for small writes.
    tx.set_nodelay(true)?;
    rx.set_nodelay(true)?;
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
    let start = Instant::now();
    let (over_1ms, over_5ms) = thread::scope(|s| -> Result<(u64, u64)> {
        let sender = s.spawn(move || -> Result<()> {
            // As the fixed-rate sender does: no timer slack, so the schedule is the
            // machine's to meet.
            let _ = nix::sys::prctl::set_timerslack(1);
            let mut buf = vec![0u8; size];
            for i in 0..messages {
                let at = due(every, i);
                if let Some(wait) = at.checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
                buf[..8].copy_from_slice(&(at.as_nanos() as u64).to_le_bytes());
                tx.write_all(&buf).context("sending on loopback")?;
            }
            Ok(())
        });
        let mut buf = vec![0u8; size];
        let mut read = Ok(());
        let mut over = (0u64, 0u64);
        for _ in 0..messages {
            if let Err(e) = rx.read_exact(&mut buf) {
                read = Err(e).context("reading on loopback");
                break;
            }
            let now = start.elapsed();
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&buf[..8]);
            let at = Duration::from_nanos(u64::from_le_bytes(stamp));
            let us = (now.saturating_sub(at).as_micros() as u64).max(1);
            let _ = histogram.record(us);
            over.0 += u64::from(us > 1_000);
            over.1 += u64::from(us > 5_000);
        }
        // A failed read closes the reader's end, which ends a sender still writing.
        drop(rx);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the loopback sender panicked"))?;
        read.and(sent).map(|()| over)
    })?;
    Ok(LoopbackReport {
        workload: "loopback",
        rate,
        size,
        messages,
        over_1ms,
        over_5ms,
        latency: Latency::from_histogram(&histogram),
    })
}
